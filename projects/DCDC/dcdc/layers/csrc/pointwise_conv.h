// 1x1 convs (optionally behind a depth-wise conv) with bias and ReLU, for
// inference on NCHW float32 CPU tensors: the narrow convs of the DCDC kernel generators.
#pragma once

#include <ATen/ATen.h>

namespace dcdc {

// x (B, C, H, W); weight_t (C, M), the 1x1 conv weight transposed; bias (M,) or none;
// depthwise_weight (C, 1, K, K), K in 3, 5, 7, applied to x first (stride 1, padding K / 2) or
// none; relu: apply a ReLU. -> (B, M, H, W)
at::Tensor pointwise_forward(const at::Tensor& x, const at::Tensor& weight_t,
                             const c10::optional<at::Tensor>& bias,
                             const c10::optional<at::Tensor>& depthwise_weight, bool relu);

}  // namespace dcdc
