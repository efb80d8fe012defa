// Depth-wise K x K convolution for the LSA kernel generator (paper Eq. 7, sigma_dw).
//
// Why native: oneDNN runs a depth-wise conv on an NCHW tensor by reordering it into a blocked
// layout and back, around a kernel that does 9 multiply-adds per value; on the generator's
// narrow maps the reorders cost more than the arithmetic. Here one task owns one (b, c) plane
// (forward, input gradient) or one channel (weight gradient), copies it into a zero-padded
// buffer that stays in cache, and computes TW output columns at a time in a vector register.
#include "depthwise_conv.h"

#include <ATen/Parallel.h>

#include <algorithm>

#include "output.h"
#include "simd.h"

namespace dcdc {

namespace {

// A (H + 2p) x row_len zero-padded copy of one plane; rows are padded to whole tiles so every
// tile reads inside the buffer and the columns past W read zeros.
struct PaddedPlane {
  int64_t height, width, pad, tiles_w, row_len;
  std::vector<float> buf;
  PaddedPlane(int64_t h, int64_t w, int64_t k)
      : height(h), width(w), pad(k / 2), tiles_w((w + TW - 1) / TW * TW),
        row_len(tiles_w + 2 * pad), buf((h + 2 * pad) * row_len, 0.f) {}
  void load(const float* plane) {  // the border stays zero from construction
    for (int64_t y = 0; y < height; ++y)
      std::copy(plane + y * width, plane + (y + 1) * width, buf.data() + (y + pad) * row_len + pad);
  }
  const float* row(int64_t padded_y) const { return buf.data() + padded_y * row_len; }
};

// out[b, c, y, x] = sum_{i,j} w[c, i, j] * in_pad[b, c, y + i, x + j] for planes [begin, end).
template <int K>
DCDC_MULTIVERSION void stencil_planes(const float* in, const float* weight, float* out,
                                      int64_t channels, int64_t height, int64_t width,
                                      int64_t begin, int64_t end) {
  PaddedPlane plane(height, width, K);
  std::vector<float> out_row(plane.tiles_w);
  for (int64_t task = begin; task < end; ++task) {
    plane.load(in + task * height * width);
    const float* w = weight + (task % channels) * K * K;
    float* dst = out + task * height * width;
    for (int64_t y = 0; y < height; ++y) {
      for (int64_t x0 = 0; x0 < plane.tiles_w; x0 += TW) {
        RowTile acc = {};
        for (int i = 0; i < K; ++i) {
          const float* r = plane.row(y + i) + x0;
          for (int j = 0; j < K; ++j) acc += w[i * K + j] * load_tile(r + j);
        }
        store_tile(out_row.data() + x0, acc);
      }
      std::copy(out_row.begin(), out_row.begin() + width, dst + y * width);
    }
  }
}

// grad_w[c, i, j] = sum_{b, y, x} grad_out[b, c, y, x] * in_pad[b, c, y + i, x + j] for channels
// [begin, end); partial sums over kRowsPerFlush rows in float vectors, the total in double.
constexpr int64_t kRowsPerFlush = 8;

template <int K>
DCDC_MULTIVERSION void weight_grad_channels(const float* grad_out, const float* in, float* grad_w,
                                            int64_t batch, int64_t channels, int64_t height,
                                            int64_t width, int64_t begin, int64_t end) {
  PaddedPlane plane(height, width, K);
  std::vector<float> go_row(plane.tiles_w, 0.f);  // columns past W stay zero
  for (int64_t c = begin; c < end; ++c) {
    double total[K * K] = {};
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t offset = (b * channels + c) * height * width;
      plane.load(in + offset);
      RowTile acc[K * K] = {};
      for (int64_t y = 0; y < height; ++y) {
        std::copy(grad_out + offset + y * width, grad_out + offset + (y + 1) * width,
                  go_row.begin());
        for (int64_t x0 = 0; x0 < plane.tiles_w; x0 += TW) {
          const RowTile g = load_tile(go_row.data() + x0);
          for (int i = 0; i < K; ++i) {
            const float* r = plane.row(y + i) + x0;
            for (int j = 0; j < K; ++j) acc[i * K + j] += g * load_tile(r + j);
          }
        }
        if ((y + 1) % kRowsPerFlush == 0 || y + 1 == height) {
          for (int t = 0; t < K * K; ++t) {
            for (int64_t l = 0; l < TW; ++l) total[t] += acc[t][l];
            acc[t] = RowTile{};
          }
        }
      }
    }
    for (int t = 0; t < K * K; ++t) grad_w[c * K * K + t] = static_cast<float>(total[t]);
  }
}

template <typename F>
void dispatch_kernel_size(int64_t k, F&& f) {
  switch (k) {
    case 3: return f(std::integral_constant<int, 3>());
    case 5: return f(std::integral_constant<int, 5>());
    case 7: return f(std::integral_constant<int, 7>());
    default: TORCH_CHECK(false, "native depth-wise conv: kernel size ", k, " not compiled");
  }
}

void check_inputs(const at::Tensor& x, const at::Tensor& weight) {
  TORCH_CHECK(x.dim() == 4 && x.device().is_cpu() && x.scalar_type() == at::kFloat,
              "native depth-wise conv: x must be a float32 CPU (B, C, H, W) tensor, got ",
              x.sizes(), " ", x.scalar_type());
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == x.size(1) && weight.size(1) == 1 &&
                  weight.size(2) == weight.size(3) && weight.scalar_type() == at::kFloat,
              "native depth-wise conv: weight must be float32 (C, 1, K, K) for C = ", x.size(1),
              ", got ", weight.sizes());
  TORCH_CHECK(depthwise_supported(weight.size(2)), "native depth-wise conv: kernel size ",
              weight.size(2), " not compiled (3, 5, 7 are)");
}

// Forward of x with w, or (flip = true) the input gradient: the correlation of grad_out with
// the kernel rotated by 180 degrees.
at::Tensor stencil(const at::Tensor& x_in, const at::Tensor& weight_in, bool flip) {
  const at::Tensor x = x_in.contiguous();
  const at::Tensor weight = (flip ? weight_in.flip({2, 3}) : weight_in).contiguous();
  at::Tensor out = empty_output(x.sizes(), x.options());
  const int64_t planes = x.size(0) * x.size(1), channels = x.size(1), h = x.size(2),
                w = x.size(3);
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(h * w, 1));
  dispatch_kernel_size(weight.size(2), [&](auto k) {
    at::parallel_for(0, planes, grain, [&](int64_t begin, int64_t end) {
      stencil_planes<decltype(k)::value>(xp, wp, op, channels, h, w, begin, end);
    });
  });
  return out;
}

}  // namespace

bool depthwise_supported(int64_t kernel_size) {
  return kernel_size == 3 || kernel_size == 5 || kernel_size == 7;
}

at::Tensor depthwise_forward(const at::Tensor& x, const at::Tensor& weight) {
  check_inputs(x, weight);
  return stencil(x, weight, false);
}

std::vector<at::Tensor> depthwise_backward(const at::Tensor& grad_out_in, const at::Tensor& x_in,
                                           const at::Tensor& weight, bool need_x, bool need_weight) {
  check_inputs(x_in, weight);
  TORCH_CHECK(grad_out_in.sizes() == x_in.sizes() && grad_out_in.scalar_type() == at::kFloat,
              "native depth-wise conv backward: grad_out has shape ", grad_out_in.sizes());
  at::Tensor grad_x, grad_w;
  if (need_x) grad_x = stencil(grad_out_in, weight, true);
  if (need_weight) {
    const at::Tensor grad_out = grad_out_in.contiguous(), x = x_in.contiguous();
    grad_w = at::empty(weight.sizes(), weight.options().memory_format(at::MemoryFormat::Contiguous));
    const int64_t batch = x.size(0), channels = x.size(1), h = x.size(2), w = x.size(3);
    const float* gp = grad_out.data_ptr<float>();
    const float* xp = x.data_ptr<float>();
    float* gwp = grad_w.data_ptr<float>();
    dispatch_kernel_size(weight.size(2), [&](auto k) {
      at::parallel_for(0, channels, 1, [&](int64_t begin, int64_t end) {
        weight_grad_channels<decltype(k)::value>(gp, xp, gwp, batch, channels, h, w, begin, end);
      });
    });
  }
  return {grad_x, grad_w};
}


}  // namespace dcdc
