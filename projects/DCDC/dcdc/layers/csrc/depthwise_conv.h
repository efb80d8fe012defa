// Depth-wise K x K convolution (stride 1, zero padding K / 2, no bias) on NCHW float32 CPU
// tensors: the sigma_dw convs of the LSA kernel generator (paper Eq. 7).
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace dcdc {

// Whether the native depth-wise kernels were compiled for kernel size k.
bool depthwise_supported(int64_t kernel_size);
// x (B, C, H, W), weight (C, 1, K, K) -> (B, C, H, W)
at::Tensor depthwise_forward(const at::Tensor& x, const at::Tensor& weight);
// -> {grad_x or undefined, grad_weight or undefined}
std::vector<at::Tensor> depthwise_backward(const at::Tensor& grad_out, const at::Tensor& x,
                                           const at::Tensor& weight, bool need_x, bool need_weight);

}  // namespace dcdc
