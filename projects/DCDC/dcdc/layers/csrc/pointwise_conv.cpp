// The narrow 1x1 convs of the DCDC generators, optionally behind a depth-wise conv, for
// inference on NCHW float32 CPU tensors:
//
//   out[b, m, y, x] = act(bias[m] + sum_c weight[m, c] * in[b, c, y, x])
//   in = x, or dw(x) = the depth-wise K x K conv of x (stride 1, zero padding K / 2)
//
// Why native: these convs have few output channels (C/4 and m = sqrt(C) of C inputs), shapes
// where a BLAS GEMM on the (C, H*W) view reaches a fraction of the machine's speed, and oneDNN
// reorders NCHW maps into a blocked layout and back around each conv; the depth-wise conv in
// front of the LSA generator's first 1x1 conv would be another pass over a C-channel map.
// Here one task owns one (b, output row): it gathers the C input rows (or
// computes their depth-wise conv) into a buffer that stays in cache and forms the output row
// with NB output channels x TW columns of accumulators in registers. The depth-wise output is
// never written to memory, the activation costs no separate pass, and the extra memory is a few
// rows per thread. (GSI's m -> C conv, summed into the LSA output, stays a BLAS GEMM: with few
// input channels it is bound by its output, where the GEMM was as fast or faster.)
#include "pointwise_conv.h"

#include "output.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "simd.h"

namespace dcdc {

namespace {

constexpr int NB = 8;  // output channels per register tile

struct Shape {
  int64_t channels, out_channels, height, width, tiles_w;
};

// dst[m * dst_stride : + TW] for m in [m0, m0 + N) (dst: the output tile of channel 0), from
// columns [x0, x0 + TW) of in_buf, which holds the C input rows of one output row. weight_t is
// (C, M) so the N weights of one c are consecutive.
template <int N>
DCDC_INLINE void gemm_tile(const float* in_buf, const float* weight_t, const float* bias,
                           float* dst, int64_t dst_stride, const Shape& s, int64_t m0, int64_t x0,
                           bool relu) {
  RowTile acc[N];
  for (int n = 0; n < N; ++n) acc[n] = broadcast_tile(bias != nullptr ? bias[m0 + n] : 0.f);
  for (int64_t c = 0; c < s.channels; ++c) {
    const RowTile v = load_tile(in_buf + c * s.tiles_w + x0);
    const float* w = weight_t + c * s.out_channels + m0;
    for (int n = 0; n < N; ++n) acc[n] += w[n] * v;
  }
  if (relu)
    for (int n = 0; n < N; ++n) acc[n] = relu_tile(acc[n]);
  for (int n = 0; n < N; ++n) store_tile(dst + (m0 + n) * dst_stride, acc[n]);
}

template <int N>
DCDC_INLINE void gemm_tail(int64_t n, const float* in_buf, const float* weight_t,
                           const float* bias, float* dst, int64_t dst_stride, const Shape& s,
                           int64_t m0, int64_t x0, bool relu) {
  if constexpr (N > 0) {
    if (n == N)
      return gemm_tile<N>(in_buf, weight_t, bias, dst, dst_stride, s, m0, x0, relu);
    gemm_tail<N - 1>(n, in_buf, weight_t, bias, dst, dst_stride, s, m0, x0, relu);
  }
}

// Rows [begin, end) of the B * H output rows. K = 0: no depth-wise conv.
template <int K>
DCDC_MULTIVERSION void pointwise_rows(const float* x, const float* dw, const float* weight_t,
                                      const float* bias, float* out, bool relu,
                                      const Shape& s, int64_t begin, int64_t end) {
  constexpr int64_t P = K / 2;
  const int64_t hw = s.height * s.width, M = s.out_channels;
  const int64_t padded_len = s.tiles_w + 2 * P;
  std::vector<float> in_buf(s.channels * s.tiles_w, 0.f), tail(M * TW, 0.f);
  std::vector<float> padded(K > 0 ? K * padded_len : 0, 0.f);  // borders stay zero
  for (int64_t task = begin; task < end; ++task) {
    const int64_t b = task / s.height, y = task % s.height;
    for (int64_t c = 0; c < s.channels; ++c) {
      const float* plane = x + (b * s.channels + c) * hw;
      float* row = in_buf.data() + c * s.tiles_w;
      if constexpr (K == 0) {
        std::copy(plane + y * s.width, plane + (y + 1) * s.width, row);
      } else {
        const float* w = dw + c * K * K;
        for (int i = 0; i < K; ++i) {
          const int64_t yy = y + i - P;
          float* dst = padded.data() + i * padded_len + P;
          if (yy < 0 || yy >= s.height)
            std::fill(dst, dst + s.width, 0.f);
          else
            std::copy(plane + yy * s.width, plane + (yy + 1) * s.width, dst);
        }
        for (int64_t x0 = 0; x0 < s.tiles_w; x0 += TW) {
          RowTile acc = {};
          for (int i = 0; i < K; ++i) {
            const float* r = padded.data() + i * padded_len + x0;
            for (int j = 0; j < K; ++j) acc += w[i * K + j] * load_tile(r + j);
          }
          store_tile(row + x0, acc);
        }
        std::fill(row + s.width, row + s.tiles_w, 0.f);
      }
    }
    // Whole tiles are written in place; the last, partial one through `tail`.
    float* out_row0 = out + b * M * hw + y * s.width;
    for (int64_t x0 = 0; x0 < s.tiles_w; x0 += TW) {
      const int64_t cols = std::min<int64_t>(TW, s.width - x0);
      float* dst = cols == TW ? out_row0 + x0 : tail.data();
      const int64_t dst_stride = cols == TW ? hw : TW;
      int64_t m0 = 0;
      for (; m0 + NB <= M; m0 += NB)
        gemm_tile<NB>(in_buf.data(), weight_t, bias, dst, dst_stride, s, m0, x0, relu);
      if (m0 < M)
        gemm_tail<NB - 1>(M - m0, in_buf.data(), weight_t, bias, dst, dst_stride, s, m0, x0,
                          relu);
      if (cols < TW)
        for (int64_t m = 0; m < M; ++m)
          std::copy(tail.data() + m * TW, tail.data() + m * TW + cols, out_row0 + m * hw + x0);
    }
  }
}

}  // namespace

at::Tensor pointwise_forward(const at::Tensor& x, const at::Tensor& weight_t,
                             const c10::optional<at::Tensor>& bias,
                             const c10::optional<at::Tensor>& depthwise_weight, bool relu) {
  TORCH_CHECK(x.dim() == 4 && x.device().is_cpu() && x.scalar_type() == at::kFloat &&
                  x.is_contiguous(),
              "pointwise_forward: x must be a contiguous float32 CPU (B, C, H, W) tensor, got ",
              x.sizes(), " ", x.scalar_type());
  const int64_t batch = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
  TORCH_CHECK(weight_t.dim() == 2 && weight_t.size(0) == channels && weight_t.is_contiguous() &&
                  weight_t.scalar_type() == at::kFloat,
              "pointwise_forward: weight_t must be a contiguous float32 (C, M) matrix for C = ",
              channels, ", got ", weight_t.sizes());
  const int64_t out_channels = weight_t.size(1);
  const float* bias_p = nullptr;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == out_channels && bias->is_contiguous() &&
                    bias->scalar_type() == at::kFloat,
                "pointwise_forward: bias must be float32 (M,), got ", bias->sizes());
    bias_p = bias->data_ptr<float>();
  }
  int64_t k = 0;
  const float* dw_p = nullptr;
  if (depthwise_weight.has_value() && depthwise_weight->defined()) {
    const at::Tensor& dw = *depthwise_weight;
    k = dw.dim() == 4 ? dw.size(3) : 0;
    TORCH_CHECK(dw.dim() == 4 && dw.size(0) == channels && dw.size(1) == 1 && dw.size(2) == k &&
                    (k == 3 || k == 5 || k == 7) && dw.is_contiguous() &&
                    dw.scalar_type() == at::kFloat,
                "pointwise_forward: depthwise_weight must be float32 (C, 1, K, K), K in 3, 5, 7, "
                "got ", dw.sizes());
    dw_p = dw.data_ptr<float>();
  }
  at::Tensor result = empty_output({batch, out_channels, height, width}, x.options());
  if (result.numel() == 0) return result;
  const Shape s{channels, out_channels, height, width, (width + TW - 1) / TW * TW};
  const float* xp = x.data_ptr<float>();
  const float* wp = weight_t.data_ptr<float>();
  float* op = result.data_ptr<float>();
  // Rows per parallel chunk: small maps run on the calling thread (no OpenMP fork / join).
  const int64_t row_work = channels * (out_channels + k * k) * width;
  const int64_t grain = std::max<int64_t>(1, (1 << 18) / std::max<int64_t>(row_work, 1));
  at::parallel_for(0, batch * height, grain, [&](int64_t begin, int64_t end) {
    switch (k) {
      case 0: return pointwise_rows<0>(xp, dw_p, wp, bias_p, op, relu, s, begin, end);
      case 3: return pointwise_rows<3>(xp, dw_p, wp, bias_p, op, relu, s, begin, end);
      case 5: return pointwise_rows<5>(xp, dw_p, wp, bias_p, op, relu, s, begin, end);
      default: return pointwise_rows<7>(xp, dw_p, wp, bias_p, op, relu, s, begin, end);
    }
  });
  return result;
}

}  // namespace dcdc
