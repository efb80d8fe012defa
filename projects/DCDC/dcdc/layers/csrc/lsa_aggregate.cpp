// Native CPU kernels for the LSA aggregation (paper Eq. 5, involution):
//
//   Y[b, c, h, w] = sum_{i,j} X[b, c, h*s + i - p, w*s + j - p] * H[b, c / (C/G), i*K + j, h, w]
//
// with out-of-range input positions contributing zero (p = (K - 1) / 2).
//
// Why a native kernel: the unfold formulation materializes a B x C x K^2 x H' x W' tensor
// (49x the input for K = 7) and the pure-PyTorch shift-and-accumulate path makes K^2 passes
// over the output and the kernels. Here one task owns one (b, g, output row) and loops
//   channel-of-group -> tap -> contiguous row,
// so the K^2 kernel rows of that output row (K^2 * W' values) stay in cache and are reused by
// all C/G channels of the group, the accumulator row stays in L1, and the innermost loop is a
// unit-stride multiply-add that the compiler vectorizes. Extra memory is one accumulator row per
// thread. Reduced-precision inputs (fp16 / bf16) accumulate in float (at::opmath_type).
//
// Since the same task structure has the K^2 kernel rows of one (b, g, h) in hand, the fused
// variant (lsa_fused_forward / lsa_fused_backward_generator) computes them there from the kernel
// generator's last 1x1 conv, H = W_span @ hidden + bias, and in backward turns the kernel-gradient
// rows straight into that conv's gradients: H and dL/dH never exist as whole tensors.
//
// Tasks are independent (each writes only its own rows), so at::parallel_for (OpenMP in the
// PyTorch build) needs no atomics; results do not depend on the thread count, except the fused
// backward's weight / bias gradients, summed from per-thread float64 partials.
//
// The module also binds the generator's depth-wise convs (depthwise_conv.cpp).
#include <torch/extension.h>

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include "depthwise_conv.h"
#include "output.h"
#include "pointwise_conv.h"
#include "simd.h"

#include <algorithm>
#include <vector>

namespace {

struct Geometry {
  int64_t batch, channels, height, width, groups, out_h, out_w, kernel_size, stride, pad;
  int64_t channels_per_group() const { return channels / groups; }
  int64_t taps() const { return kernel_size * kernel_size; }
  // Tasks per parallel chunk: small maps (tests, gradcheck, the 7x7 res5 of small images) run
  // on the calling thread instead of paying an OpenMP fork/join for a few microseconds of work.
  int64_t grain() const {
    const int64_t work = channels_per_group() * taps() * std::max<int64_t>(out_w, 1);
    return std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(work, 1));
  }
  // Output columns w whose input column w*s + j - p lies inside [0, width).
  void valid_cols(int64_t j, int64_t* lo, int64_t* hi) const {
    const int64_t first = pad - j;  // need w*s >= first
    *lo = first <= 0 ? 0 : (first + stride - 1) / stride;
    const int64_t last = width - 1 + pad - j;  // need w*s <= last
    *hi = last < 0 ? 0 : std::min(out_w, last / stride + 1);
  }
};

// kernel_sizes: (B, G, K*K, H', W'), the shape of the kernels (given or generated on the fly).
Geometry make_geometry(const at::Tensor& x, at::IntArrayRef kernel_sizes, int64_t kernel_size,
                       int64_t stride) {
  TORCH_CHECK(x.dim() == 4, "lsa_aggregate: x must be (B, C, H, W), got ", x.sizes());
  TORCH_CHECK(kernel_sizes.size() == 5, "lsa_aggregate: kernels must be (B, G, K*K, H', W'), got ",
              kernel_sizes);
  TORCH_CHECK(x.device().is_cpu(),
              "lsa_aggregate native kernel is CPU-only; other devices use the PyTorch path");
  Geometry g{x.size(0), x.size(1), x.size(2), x.size(3), kernel_sizes[1], kernel_sizes[3],
             kernel_sizes[4], kernel_size, stride, (kernel_size - 1) / 2};
  TORCH_CHECK(kernel_size >= 1 && kernel_size % 2 == 1 && stride >= 1,
              "lsa_aggregate: kernel_size must be odd and stride positive");
  TORCH_CHECK(g.groups > 0 && g.channels % g.groups == 0 && kernel_sizes[0] == g.batch &&
                  kernel_sizes[2] == g.taps() && g.out_h == (g.height + stride - 1) / stride &&
                  g.out_w == (g.width + stride - 1) / stride,
              "lsa_aggregate: inconsistent shapes x ", x.sizes(), " kernels ", kernel_sizes);
  return g;
}

Geometry make_geometry(const at::Tensor& x, const at::Tensor& kernels, int64_t kernel_size,
                       int64_t stride) {
  TORCH_CHECK(kernels.device().is_cpu() && x.scalar_type() == kernels.scalar_type(),
              "lsa_aggregate: x and kernels must be CPU tensors of one dtype");
  return make_geometry(x, kernels.sizes(), kernel_size, stride);
}

template <typename scalar_t>
void forward_kernel(const scalar_t* x, const scalar_t* k, scalar_t* out, const Geometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t cpg = g.channels_per_group(), taps = g.taps(), s = g.stride;
  const int64_t n_tasks = g.batch * g.groups * g.out_h;
  at::parallel_for(0, n_tasks, g.grain(), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(g.out_w);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t h = task % g.out_h, bg = task / g.out_h, grp = bg % g.groups,
                    b = bg / g.groups;
      const scalar_t* k_bg = k + bg * taps * g.out_h * g.out_w + h * g.out_w;
      for (int64_t c = grp * cpg; c < (grp + 1) * cpg; ++c) {
        std::fill(acc.begin(), acc.end(), acc_t(0));
        acc_t* a = acc.data();
        const scalar_t* x_bc = x + (b * g.channels + c) * g.height * g.width;
        for (int64_t i = 0; i < g.kernel_size; ++i) {
          const int64_t y = h * s + i - g.pad;
          if (y < 0 || y >= g.height) continue;
          const scalar_t* x_row = x_bc + y * g.width - g.pad;
          for (int64_t j = 0; j < g.kernel_size; ++j) {
            const scalar_t* k_row = k_bg + (i * g.kernel_size + j) * g.out_h * g.out_w;
            const scalar_t* xs = x_row + j;
            int64_t lo, hi;
            g.valid_cols(j, &lo, &hi);
            if (s == 1) {
#pragma omp simd
              for (int64_t w = lo; w < hi; ++w)
                a[w] += static_cast<acc_t>(xs[w]) * static_cast<acc_t>(k_row[w]);
            } else {
              for (int64_t w = lo; w < hi; ++w)
                a[w] += static_cast<acc_t>(xs[w * s]) * static_cast<acc_t>(k_row[w]);
            }
          }
        }
        scalar_t* o = out + ((b * g.channels + c) * g.out_h + h) * g.out_w;
        for (int64_t w = 0; w < g.out_w; ++w) o[w] = static_cast<scalar_t>(a[w]);
      }
    }
  });
}

// dL/dX: one task per (b, g, input row y). Output rows h with h*s + i - p == y scatter into a
// padded accumulator row of that single input row, so tasks never write the same memory.
template <typename scalar_t>
void backward_input_kernel(const scalar_t* grad_out, const scalar_t* k, scalar_t* grad_x,
                           const Geometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t cpg = g.channels_per_group(), taps = g.taps(), s = g.stride;
  const int64_t n_tasks = g.batch * g.groups * g.height;
  const int64_t acc_len = g.out_w * s + g.kernel_size;  // covers padded columns w*s + j
  at::parallel_for(0, n_tasks, g.grain(), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(acc_len);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t y = task % g.height, bg = task / g.height, grp = bg % g.groups,
                    b = bg / g.groups;
      const scalar_t* k_bg = k + bg * taps * g.out_h * g.out_w;
      for (int64_t c = grp * cpg; c < (grp + 1) * cpg; ++c) {
        std::fill(acc.begin(), acc.end(), acc_t(0));
        acc_t* a = acc.data();
        const scalar_t* go_bc = grad_out + (b * g.channels + c) * g.out_h * g.out_w;
        for (int64_t i = 0; i < g.kernel_size; ++i) {
          const int64_t num = y + g.pad - i;  // = h * s
          if (num < 0 || num % s != 0 || num / s >= g.out_h) continue;
          const int64_t h = num / s;
          const scalar_t* go_row = go_bc + h * g.out_w;
          for (int64_t j = 0; j < g.kernel_size; ++j) {
            const scalar_t* k_row = k_bg + ((i * g.kernel_size + j) * g.out_h + h) * g.out_w;
            acc_t* aj = a + j;
            if (s == 1) {
#pragma omp simd
              for (int64_t w = 0; w < g.out_w; ++w)
                aj[w] += static_cast<acc_t>(go_row[w]) * static_cast<acc_t>(k_row[w]);
            } else {
              for (int64_t w = 0; w < g.out_w; ++w)
                aj[w * s] += static_cast<acc_t>(go_row[w]) * static_cast<acc_t>(k_row[w]);
            }
          }
        }
        scalar_t* gx = grad_x + ((b * g.channels + c) * g.height + y) * g.width;
        for (int64_t xc = 0; xc < g.width; ++xc) gx[xc] = static_cast<scalar_t>(a[xc + g.pad]);
      }
    }
  });
}

// dL/dH: one task per (b, g, output row h); each tap's row sums over the channels of the group.
template <typename scalar_t>
void backward_kernels_kernel(const scalar_t* grad_out, const scalar_t* x, scalar_t* grad_k,
                             const Geometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t cpg = g.channels_per_group(), taps = g.taps(), s = g.stride;
  const int64_t n_tasks = g.batch * g.groups * g.out_h;
  at::parallel_for(0, n_tasks, g.grain(), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(g.out_w);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t h = task % g.out_h, bg = task / g.out_h, grp = bg % g.groups,
                    b = bg / g.groups;
      for (int64_t i = 0; i < g.kernel_size; ++i) {
        const int64_t y = h * s + i - g.pad;
        const bool row_valid = y >= 0 && y < g.height;
        for (int64_t j = 0; j < g.kernel_size; ++j) {
          std::fill(acc.begin(), acc.end(), acc_t(0));
          acc_t* a = acc.data();
          if (row_valid) {
            int64_t lo, hi;
            g.valid_cols(j, &lo, &hi);
            for (int64_t c = grp * cpg; c < (grp + 1) * cpg; ++c) {
              const scalar_t* go_row = grad_out + ((b * g.channels + c) * g.out_h + h) * g.out_w;
              const scalar_t* xs =
                  x + ((b * g.channels + c) * g.height + y) * g.width - g.pad + j;
              if (s == 1) {
#pragma omp simd
                for (int64_t w = lo; w < hi; ++w)
                  a[w] += static_cast<acc_t>(go_row[w]) * static_cast<acc_t>(xs[w]);
              } else {
                for (int64_t w = lo; w < hi; ++w)
                  a[w] += static_cast<acc_t>(go_row[w]) * static_cast<acc_t>(xs[w * s]);
              }
            }
          }
          scalar_t* gk =
              grad_k + ((bg * taps + i * g.kernel_size + j) * g.out_h + h) * g.out_w;
          for (int64_t w = 0; w < g.out_w; ++w) gk[w] = static_cast<scalar_t>(a[w]);
        }
      }
    }
  });
}


// ---------------------------------------------------------------------------------------------
// float32 fast path. Same loops as above, but register-tiled: a task copies the K input rows it
// needs into zero-padded row buffers (no bounds checks in the hot loop), and computes TW output
// columns of CB channels at once in registers over all K*K taps, so each multiply-add costs
// ~1.25 loads and no accumulator traffic. target_clones compiles it for AVX-512 / AVX2+FMA /
// baseline x86-64 and picks one at load time (other compilers/architectures: one baseline build).
// Needs out_w >= TW; narrower maps take the generic path.
using dcdc::broadcast_tile;
using dcdc::load_tile;
using dcdc::RowTile;
using dcdc::store_tile;
using dcdc::TW;
constexpr int64_t CB = 4;   // channels per register tile (they share the kernel loads)

// Tile starts covering [0, n): full tiles, then one tile ending at n (overlap is recomputed).
template <typename F>
DCDC_INLINE void for_each_tile(int64_t n, F&& f) {
  int64_t w0 = 0;
  for (; w0 + TW <= n; w0 += TW) f(w0);
  if (w0 < n) f(n - TW);
}

// Copy input row y of one channel into buf[p : p + W], zeros elsewhere in [0, len).
DCDC_INLINE void pad_row(float* buf, const float* row, int64_t width, int64_t pad, int64_t len) {
  std::fill(buf, buf + pad, 0.f);
  std::copy(row, row + width, buf + pad);
  std::fill(buf + pad + width, buf + len, 0.f);
}

// Padded input rows, split by column phase so that strided outputs read unit-stride memory:
// padded column q (= w*s + j) is stored at phase (q % s), position q / s. Tap j of output
// column w is then phase (j % s), position w + j / s: consecutive w are consecutive floats.
struct PhasedRows {
  int64_t stride, phase_len, row_len;  // row_len = stride * phase_len floats per input row
  std::vector<int64_t> tap_offset;     // of tap column j; a division per use costs ~8x the FMAs
  PhasedRows(const Geometry& g)
      : stride(g.stride),
        phase_len((std::max(g.out_w * g.stride + g.kernel_size, g.pad + g.width) + g.stride - 1) /
                  g.stride),
        row_len(stride * phase_len),
        tap_offset(g.kernel_size) {
    for (int64_t j = 0; j < g.kernel_size; ++j)
      tap_offset[j] = (j % stride) * phase_len + j / stride;
  }
  void fill(float* buf, const float* row, int64_t width, int64_t pad) const {
    if (stride == 1) return pad_row(buf, row, width, pad, row_len);
    for (int64_t phase = 0; phase < stride; ++phase) {
      // positions [lo, hi) read input columns pos * stride + off inside [0, width), no branch
      float* dst = buf + phase * phase_len;
      const int64_t off = phase - pad, last = width - 1 - off;
      const int64_t lo = std::min(phase_len, off >= 0 ? 0 : (stride - 1 - off) / stride);
      const int64_t hi = std::max(lo, last < 0 ? 0 : std::min(phase_len, last / stride + 1));
      const float* src = row + off;
      std::fill(dst, dst + lo, 0.f);
      if (stride == 2) {  // a constant stride the compiler vectorizes
        for (int64_t pos = lo; pos < hi; ++pos) dst[pos] = src[2 * pos];
      } else {
        for (int64_t pos = lo; pos < hi; ++pos) dst[pos] = src[pos * stride];
      }
      std::fill(dst + hi, dst + phase_len, 0.f);
    }
  }
  const float* tap(const float* buf, int64_t j) const { return buf + tap_offset[j]; }
};

// nc channels x in_rows padded input rows from input row y0 (zero rows outside the image),
// channel-major: forward_tile's layout. x_c0 is the first channel's map.
DCDC_INLINE void fill_input_rows(float* buf, const float* x_c0, int64_t nc, int64_t in_rows,
                                 int64_t y0, const Geometry& g, const PhasedRows& rows) {
  for (int64_t c = 0; c < nc; ++c) {
    for (int64_t ii = 0; ii < in_rows; ++ii) {
      float* dst = buf + (c * in_rows + ii) * rows.row_len;
      const int64_t y = y0 + ii;
      if (y < 0 || y >= g.height)  // zero padding rows
        std::fill(dst, dst + rows.row_len, 0.f);
      else
        rows.fill(dst, x_c0 + c * g.height * g.width + y * g.width, g.width, g.pad);
    }
  }
}

// Output rows per task of the float32 forward. Rows h and h + 1 read the same input rows (at
// taps i and i - s), so each input tile loaded feeds both: per multiply-add, loads drop from
// (CB + 1) / CB to (CB + RB) / (RB * CB); the input loads, most of them across cache lines, are
// what bounds this loop.
constexpr int64_t RB = 2;

// Tile [w0, w0 + TW) of NR output rows x NC channels. xbuf holds NC * in_rows padded input
// rows, in_rows = (NR - 1) * s + K, starting at input row h * s - p; the kernel of output row r,
// tap t, columns [w0, w0 + TW) is at k_rows[r] + t * k_tap_stride + k_col + w0 (k_col = 0 for
// whole kernel rows, -w0 for a buffer of one column tile).
template <int NR, int NC>
DCDC_INLINE void forward_tile(const float* xbuf, const PhasedRows& rows, int64_t in_rows,
                              const float* const* k_rows, int64_t k_tap_stride, int64_t k_col,
                              float* out0,
                              int64_t channel_stride, int64_t row_stride, int64_t w0, int64_t K,
                              int64_t s) {
  RowTile acc[NR][NC] = {};
  for (int64_t ii = 0; ii < in_rows; ++ii) {
    for (int64_t j = 0; j < K; ++j) {
      RowTile xv[NC];
      for (int cb = 0; cb < NC; ++cb)
        xv[cb] = load_tile(rows.tap(xbuf + (cb * in_rows + ii) * rows.row_len, j) + w0);
      for (int r = 0; r < NR; ++r) {
        const int64_t i = ii - r * s;  // output row r uses input row ii at kernel row i
        if (i < 0 || i >= K) continue;
        const RowTile kv = load_tile(k_rows[r] + (i * K + j) * k_tap_stride + k_col + w0);
        for (int cb = 0; cb < NC; ++cb) acc[r][cb] += xv[cb] * kv;
      }
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int cb = 0; cb < NC; ++cb)
      store_tile(out0 + r * row_stride + cb * channel_stride + w0, acc[r][cb]);
}

template <int NR>
DCDC_INLINE void forward_rows_nr(const float* x, const float* const* k_rows, int64_t k_tap_stride,
                                 float* out, const Geometry& g, const PhasedRows& rows,
                                 float* buf, int64_t b, int64_t grp, int64_t h) {
  const int64_t s = g.stride, K = g.kernel_size, p = g.pad, cpg = g.channels_per_group();
  const int64_t hw_out = g.out_h * g.out_w, hw_in = g.height * g.width;
  const int64_t in_rows = (NR - 1) * s + K, y0 = h * s - p;
  for (int64_t c0 = grp * cpg; c0 < (grp + 1) * cpg; c0 += CB) {
    const int64_t nb = std::min<int64_t>(CB, (grp + 1) * cpg - c0);
    fill_input_rows(buf, x + (b * g.channels + c0) * hw_in, nb, in_rows, y0, g, rows);
    float* out0 = out + ((b * g.channels + c0) * g.out_h + h) * g.out_w;
    for_each_tile(g.out_w, [&](int64_t w0) {
      if (nb == CB) {
        forward_tile<NR, CB>(buf, rows, in_rows, k_rows, k_tap_stride, 0, out0, hw_out, g.out_w, w0,
                             K, s);
      } else {
        for (int64_t cb = 0; cb < nb; ++cb)
          forward_tile<NR, 1>(buf + cb * in_rows * rows.row_len, rows, in_rows, k_rows,
                              k_tap_stride, 0, out0 + cb * hw_out, hw_out, g.out_w, w0, K, s);
      }
    });
  }
}

// Output rows [h, h + nr) (nr <= RB) of the channels of group grp of sample b; tap t of row r's
// kernels starts at k_rows[r] + t * k_tap_stride. buf holds CB * ((RB - 1) * s + K) padded rows.
DCDC_INLINE void forward_rows_f32(const float* x, const float* const* k_rows,
                                  int64_t k_tap_stride, float* out, const Geometry& g,
                                  const PhasedRows& rows, float* buf, int64_t b, int64_t grp,
                                  int64_t h, int64_t nr) {
  static_assert(RB == 2, "forward_rows_f32 dispatches 1 or 2 rows");
  if (nr == 2)
    forward_rows_nr<2>(x, k_rows, k_tap_stride, out, g, rows, buf, b, grp, h);
  else
    forward_rows_nr<1>(x, k_rows, k_tap_stride, out, g, rows, buf, b, grp, h);
}

int64_t forward_buffer_len(const Geometry& g, const PhasedRows& rows) {
  return CB * ((RB - 1) * g.stride + g.kernel_size) * rows.row_len;
}

// Tasks [begin, end) of the B * G * ceil(H' / RB) (sample, group, row block) tasks.
DCDC_MULTIVERSION void forward_f32(const float* x, const float* k, float* out, const Geometry& g,
                                   int64_t begin, int64_t end) {
  const int64_t hw_out = g.out_h * g.out_w, blocks = (g.out_h + RB - 1) / RB;
  const PhasedRows rows(g);
  std::vector<float> buf(forward_buffer_len(g, rows));
  for (int64_t task = begin; task < end; ++task) {
    const int64_t h = task % blocks * RB, bg = task / blocks, nr = std::min(RB, g.out_h - h);
    const float* k_rows[RB] = {};
    for (int64_t r = 0; r < nr; ++r) k_rows[r] = k + bg * g.taps() * hw_out + (h + r) * g.out_w;
    forward_rows_f32(x, k_rows, hw_out, out, g, rows, buf.data(), bg / g.groups, bg % g.groups,
                     h, nr);
  }
}

// Kernel generation fused with the aggregation: the kernels of (b, grp, output rows h..) are
// the output of the generator's last 1x1 conv,
//   k[t][w] = bias[grp*K*K + t] + sum_r weight[grp*K*K + t][r] * hidden[b][r][h][w],
// computed a column tile at a time into an nr x K*K x TW buffer (nr <= RBF; in L1) that the
// aggregation of all channels of the group reads right away: neither a B x G*K*K x H' x W'
// tensor in memory nor a K*K x W' row buffer, which exceeds L1 and would be read back from L2
// once per channel block. Register tile of the generation: NT taps x TW columns; each hidden
// load feeds NT multiply-adds. weight_t is the weight transposed per group, (G, R, K*K), so the
// NT weights of one r are consecutive.
constexpr int64_t NT = 7;  // taps per register tile of the kernel generation

template <int N>
DCDC_INLINE void generate_tile(const float* hidden_row, int64_t hidden_stride,
                               const float* weight_t, const float* bias, int64_t reduced,
                               int64_t taps, int64_t t0, int64_t w0, float* ktile) {
  RowTile acc[N];
  for (int t = 0; t < N; ++t) acc[t] = broadcast_tile(bias != nullptr ? bias[t0 + t] : 0.f);
  for (int64_t r = 0; r < reduced; ++r) {
    const RowTile hv = load_tile(hidden_row + r * hidden_stride + w0);
    const float* wr = weight_t + r * taps + t0;
    for (int t = 0; t < N; ++t) acc[t] += wr[t] * hv;
  }
  for (int t = 0; t < N; ++t) store_tile(ktile + (t0 + t) * TW, acc[t]);
}

// All taps of columns [w0, w0 + TW) of one output row into ktile (taps x TW).
DCDC_INLINE void generate_taps(const float* hidden_row, int64_t hidden_stride,
                               const float* weight_t, const float* bias, int64_t reduced,
                               int64_t taps, int64_t w0, float* ktile) {
  int64_t t0 = 0;
  for (; t0 + NT <= taps; t0 += NT)
    generate_tile<NT>(hidden_row, hidden_stride, weight_t, bias, reduced, taps, t0, w0, ktile);
  switch (taps - t0) {  // the rest in one register tile (taps = 9 for K = 3, 25 for K = 5)
#define DCDC_GENERATE_REST(N)                                                              \
  case N:                                                                                  \
    return generate_tile<N>(hidden_row, hidden_stride, weight_t, bias, reduced, taps, t0, w0, \
                            ktile);
    DCDC_GENERATE_REST(6)
    DCDC_GENERATE_REST(5)
    DCDC_GENERATE_REST(4)
    DCDC_GENERATE_REST(3)
    DCDC_GENERATE_REST(2)
    DCDC_GENERATE_REST(1)
#undef DCDC_GENERATE_REST
    default: return;
  }
}

// Output rows per task of the fused forward. Its kernel tiles are in L1, so more rows per task
// cost no extra memory traffic, and each input tile loaded feeds up to RBF output rows. K = 3
// (the stem) has too little work per input row for that: it ran faster with 2 rows per task.
constexpr int64_t RBF = 4;
int64_t fused_rows(const Geometry& g) { return g.kernel_size >= 5 ? RBF : 2; }

template <int NR>
DCDC_INLINE void fused_tile_channels(const float* xbuf, const PhasedRows& rows, int64_t in_rows,
                                     const float* const* k_rows, float* out_g, int64_t cpg,
                                     int64_t hw_out, int64_t out_w, int64_t w0, int64_t K,
                                     int64_t s) {
  int64_t c0 = 0;
  for (; c0 + CB <= cpg; c0 += CB)
    forward_tile<NR, CB>(xbuf + c0 * in_rows * rows.row_len, rows, in_rows, k_rows, TW, -w0,
                         out_g + c0 * hw_out, hw_out, out_w, w0, K, s);
  for (; c0 < cpg; ++c0)
    forward_tile<NR, 1>(xbuf + c0 * in_rows * rows.row_len, rows, in_rows, k_rows, TW, -w0,
                        out_g + c0 * hw_out, hw_out, out_w, w0, K, s);
}

// DCDCConv2d's global branch on the tile just stored (still in L1), for nr output rows from h:
//   out[c][h + r][w0 : w0 + TW] += sum_m gsi_w[c][m] * gsi_z[m][h + r][w0 : w0 + TW]
// (gsi_w = E P_b, the GSI expansion times the sample's dynamic kernel; gsi_z its pooled
// features), instead of a pass over the whole output afterwards.
DCDC_INLINE void add_gsi_tile(float* out_g, const float* z_b, const float* w_g, int64_t m,
                              int64_t cpg, int64_t nr, int64_t hw_out, int64_t out_w, int64_t h,
                              int64_t w0) {
  for (int64_t r = 0; r < nr; ++r) {
    const float* z_row = z_b + (h + r) * out_w + w0;
    float* o = out_g + r * out_w + w0;
    int64_t c0 = 0;
    for (; c0 + CB <= cpg; c0 += CB) {
      RowTile acc[CB];
      for (int cb = 0; cb < CB; ++cb) acc[cb] = load_tile(o + (c0 + cb) * hw_out);
      for (int64_t mm = 0; mm < m; ++mm) {
        const RowTile zv = load_tile(z_row + mm * hw_out);
        for (int cb = 0; cb < CB; ++cb) acc[cb] += w_g[(c0 + cb) * m + mm] * zv;
      }
      for (int cb = 0; cb < CB; ++cb) store_tile(o + (c0 + cb) * hw_out, acc[cb]);
    }
    for (; c0 < cpg; ++c0) {
      RowTile acc = load_tile(o + c0 * hw_out);
      for (int64_t mm = 0; mm < m; ++mm) acc += w_g[c0 * m + mm] * load_tile(z_row + mm * hw_out);
      store_tile(o + c0 * hw_out, acc);
    }
  }
}

// gsi_z (B, m, H', W') and gsi_w (B, C, m), or null: add_gsi_tile's global branch.
DCDC_MULTIVERSION void fused_forward_f32(const float* x, const float* hidden,
                                         const float* weight_t, const float* bias,
                                         int64_t reduced, const float* gsi_z, const float* gsi_w,
                                         int64_t gsi_m, float* out, const Geometry& g,
                                         int64_t begin, int64_t end) {
  const int64_t taps = g.taps(), hw_out = g.out_h * g.out_w, hw_in = g.height * g.width,
                rb = fused_rows(g), blocks = (g.out_h + rb - 1) / rb,
                cpg = g.channels_per_group();
  const int64_t s = g.stride, K = g.kernel_size, p = g.pad;
  const PhasedRows rows(g);
  const int64_t in_rows_max = (rb - 1) * s + K;
  std::vector<float> xbuf(cpg * in_rows_max * rows.row_len), ktile(rb * taps * TW);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t h = task % blocks * rb, bg = task / blocks, grp = bg % g.groups,
                  b = bg / g.groups;
    const int64_t nr = std::min(rb, g.out_h - h), in_rows = (nr - 1) * s + K, y0 = h * s - p;
    const float* w_g = weight_t + grp * reduced * taps;
    const float* b_g = bias != nullptr ? bias + grp * taps : nullptr;
    // the padded input rows of every channel of the group
    fill_input_rows(xbuf.data(), x + (b * g.channels + grp * cpg) * hw_in, cpg, in_rows, y0, g,
                    rows);
    const float* k_rows[RBF];
    for (int64_t r = 0; r < nr; ++r) k_rows[r] = ktile.data() + r * taps * TW;
    float* out_g = out + ((b * g.channels + grp * cpg) * g.out_h + h) * g.out_w;
    // (a plain loop, not for_each_tile: GCC outlines that lambda out of the target clones here)
    for (int64_t tile = 0; tile < g.out_w; tile += TW) {
      const int64_t w0 = std::min(tile, g.out_w - TW);  // the last tile may overlap
      for (int64_t r = 0; r < nr; ++r)
        generate_taps(hidden + b * reduced * hw_out + (h + r) * g.out_w, hw_out, w_g, b_g,
                      reduced, taps, w0, ktile.data() + r * taps * TW);
      static_assert(RBF == 4, "fused_forward_f32 dispatches 1 to 4 rows");
#define DCDC_AGGREGATE_ROWS(NR) \
  fused_tile_channels<NR>(xbuf.data(), rows, in_rows, k_rows, out_g, cpg, hw_out, g.out_w, w0, K, s)
      switch (nr) {
        case 4: DCDC_AGGREGATE_ROWS(4); break;
        case 3: DCDC_AGGREGATE_ROWS(3); break;
        case 2: DCDC_AGGREGATE_ROWS(2); break;
        default: DCDC_AGGREGATE_ROWS(1);
      }
#undef DCDC_AGGREGATE_ROWS
      if (gsi_z != nullptr)
        add_gsi_tile(out_g, gsi_z + b * gsi_m * hw_out,
                     gsi_w + (b * g.channels + grp * cpg) * gsi_m, gsi_m, cpg, nr, hw_out,
                     g.out_w, h, w0);
    }
  }
}

// The K*K kernel-gradient rows of (b, grp, h): gk_row0[t * tap_stride + w] =
//   sum_c go[c][h][w] * xpad[c][h*s + i][w*s + j]   (t = i*K + j, c in group grp).
// buf holds cpg * K padded input rows.
DCDC_INLINE void kernel_grad_row_f32(const float* go, const float* x, const Geometry& g,
                                     const PhasedRows& rows, float* buf, int64_t b, int64_t grp,
                                     int64_t h, float* gk_row0, int64_t tap_stride) {
  const int64_t s = g.stride, K = g.kernel_size, p = g.pad;
  const int64_t cpg = g.channels_per_group(), hw_out = g.out_h * g.out_w,
                hw_in = g.height * g.width;
  const int64_t i_lo = std::max<int64_t>(0, p - h * s);
  const int64_t i_hi = std::min<int64_t>(K, g.height + p - h * s);
  const int64_t c_first = grp * cpg;
  for (int64_t c = 0; c < cpg; ++c)
    for (int64_t i = i_lo; i < i_hi; ++i)
      rows.fill(buf + (c * K + i) * rows.row_len,
                x + (b * g.channels + c_first + c) * hw_in + (h * s + i - p) * g.width, g.width, p);
  const float* go0 = go + ((b * g.channels + c_first) * g.out_h + h) * g.out_w;
  for (int64_t i = 0; i < K; ++i) {
    for (int64_t j = 0; j < K; ++j) {
      float* gk_row = gk_row0 + (i * K + j) * tap_stride;
      if (i < i_lo || i >= i_hi) {
        std::fill(gk_row, gk_row + g.out_w, 0.f);
        continue;
      }
      for_each_tile(g.out_w, [&](int64_t w0) {
        RowTile acc = {};
        for (int64_t c = 0; c < cpg; ++c)
          acc += load_tile(go0 + c * hw_out + w0) *
                 load_tile(rows.tap(buf + (c * K + i) * rows.row_len, j) + w0);
        store_tile(gk_row + w0, acc);
      });
    }
  }
}

// dL/dH, one task per (b, g, h).
DCDC_MULTIVERSION void backward_kernels_f32(const float* go, const float* x, float* gk,
                                            const Geometry& g, int64_t begin, int64_t end) {
  const int64_t hw_out = g.out_h * g.out_w;
  const PhasedRows rows(g);
  std::vector<float> buf(g.channels_per_group() * g.kernel_size * rows.row_len);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t h = task % g.out_h, bg = task / g.out_h;
    kernel_grad_row_f32(go, x, g, rows, buf.data(), bg / g.groups, bg % g.groups, h,
                        gk + bg * g.taps() * hw_out + h * g.out_w, hw_out);
  }
}

// Backward of the fused kernel generation (kernels = weight @ hidden + bias) without the
// B x G*K*K x H' x W' kernel gradient: one task per (b, h) computes the kernel-gradient rows of
// each group in cache and at once applies the 1x1 conv's backward to them:
//   grad_hidden[b, r, h, :] = sum_{g,t} weight[g*K*K + t, r] * gk[g, t, :]
//   grad_weight[g*K*K + t, r] += gk[g, t, :] . hidden[b, r, h, :]   (per-thread partial sums)
//   grad_bias[g*K*K + t] += sum_w gk[g, t, w]
// Rows are zero-padded to whole tiles (tiles_w columns) so every dot product covers full tiles.
DCDC_MULTIVERSION void fused_backward_generator_f32(
    const float* go, const float* x, const float* hidden, const float* weight, int64_t reduced,
    float* grad_hidden, double* grad_weight_acc, double* grad_bias_acc, const Geometry& g,
    int64_t begin, int64_t end) {
  const int64_t taps = g.taps(), hw_out = g.out_h * g.out_w;
  const int64_t tiles_w = (g.out_w + TW - 1) / TW * TW;
  const PhasedRows rows(g);
  std::vector<float> buf(g.channels_per_group() * g.kernel_size * rows.row_len);
  std::vector<float> gk(taps * tiles_w), hid(reduced * tiles_w, 0.f), gh(reduced * tiles_w);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t h = task % g.out_h, b = task / g.out_h;
    for (int64_t r = 0; r < reduced; ++r)
      std::copy_n(hidden + (b * reduced + r) * hw_out + h * g.out_w, g.out_w,
                  hid.begin() + r * tiles_w);
    std::fill(gh.begin(), gh.end(), 0.f);
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      kernel_grad_row_f32(go, x, g, rows, buf.data(), b, grp, h, gk.data(), tiles_w);
      for (int64_t t = 0; t < taps; ++t)
        std::fill(gk.begin() + t * tiles_w + g.out_w, gk.begin() + (t + 1) * tiles_w, 0.f);
      const float* w_g = weight + grp * taps * reduced;
      for (int64_t w0 = 0; w0 < tiles_w; w0 += TW) {
        int64_t r0 = 0;  // grad_hidden: NT channels r at a time, over the taps of this group
        for (; r0 + NT <= reduced; r0 += NT) {
          RowTile acc[NT];
          for (int rr = 0; rr < NT; ++rr) acc[rr] = load_tile(gh.data() + (r0 + rr) * tiles_w + w0);
          for (int64_t t = 0; t < taps; ++t) {
            const RowTile gv = load_tile(gk.data() + t * tiles_w + w0);
            const float* wt = w_g + t * reduced + r0;
            for (int rr = 0; rr < NT; ++rr) acc[rr] += wt[rr] * gv;
          }
          for (int rr = 0; rr < NT; ++rr) store_tile(gh.data() + (r0 + rr) * tiles_w + w0, acc[rr]);
        }
        for (; r0 < reduced; ++r0) {
          RowTile acc = load_tile(gh.data() + r0 * tiles_w + w0);
          for (int64_t t = 0; t < taps; ++t)
            acc += w_g[t * reduced + r0] * load_tile(gk.data() + t * tiles_w + w0);
          store_tile(gh.data() + r0 * tiles_w + w0, acc);
        }
      }
      constexpr int64_t RB = 4;  // grad_weight: RB channels r share each gradient-row load
      for (int64_t t = 0; t < taps; ++t) {
        const float* gk_t = gk.data() + t * tiles_w;
        RowTile bias_acc = {};
        for (int64_t w0 = 0; w0 < tiles_w; w0 += TW) bias_acc += load_tile(gk_t + w0);
        double* gw_t = grad_weight_acc + (grp * taps + t) * reduced;
        for (int64_t r0 = 0; r0 < reduced; r0 += RB) {
          const int64_t nr = std::min<int64_t>(RB, reduced - r0);
          RowTile acc[RB] = {};
          for (int64_t w0 = 0; w0 < tiles_w; w0 += TW) {
            const RowTile gv = load_tile(gk_t + w0);
            for (int64_t rr = 0; rr < nr; ++rr)
              acc[rr] += gv * load_tile(hid.data() + (r0 + rr) * tiles_w + w0);
          }
          for (int64_t rr = 0; rr < nr; ++rr)
            for (int64_t l = 0; l < TW; ++l) gw_t[r0 + rr] += acc[rr][l];
        }
        for (int64_t l = 0; l < TW; ++l) grad_bias_acc[grp * taps + t] += bias_acc[l];
      }
    }
    for (int64_t r = 0; r < reduced; ++r)
      std::copy_n(gh.begin() + r * tiles_w, g.out_w,
                  grad_hidden + (b * reduced + r) * hw_out + h * g.out_w);
  }
}

// dL/dX for stride 1 as a gather, one task per (b, g, y):
//   gx[c][y][x] = sum_{i,j} go[c][y+p-i][x+p-j] * k[i*K+j][y+p-i][x+p-j],
// with the grad rows and kernel rows copied into zero-padded buffers (index x + 2p - j).
DCDC_MULTIVERSION void backward_input_f32_s1(const float* go, const float* k, float* gx,
                                             const Geometry& g, int64_t begin, int64_t end) {
  const int64_t K = g.kernel_size, p = g.pad, cpg = g.channels_per_group();
  const int64_t hw = g.height * g.width, row_len = g.width + 2 * p;
  std::vector<float> gbuf(cpg * K * row_len), kbuf(K * K * row_len);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t y = task % g.height, bg = task / g.height, grp = bg % g.groups, b = bg / g.groups;
    // rows h = y + p - i inside [0, H)
    const int64_t i_lo = std::max<int64_t>(0, y + p - (g.height - 1)),
                  i_hi = std::min<int64_t>(K, y + p + 1);
    const int64_t c_first = grp * cpg;
    for (int64_t i = i_lo; i < i_hi; ++i) {
      const int64_t h = y + p - i;
      for (int64_t c = 0; c < cpg; ++c)
        pad_row(gbuf.data() + (c * K + i) * row_len,
                go + (b * g.channels + c_first + c) * hw + h * g.width, g.width, p, row_len);
      for (int64_t j = 0; j < K; ++j)
        pad_row(kbuf.data() + (i * K + j) * row_len,
                k + (bg * g.taps() + i * K + j) * hw + h * g.width, g.width, p, row_len);
    }
    for (int64_t c0 = 0; c0 < cpg; c0 += CB) {
      const int64_t nb = std::min<int64_t>(CB, cpg - c0);
      float* gx0 = gx + ((b * g.channels + c_first + c0) * g.height + y) * g.width;
      for_each_tile(g.width, [&](int64_t x0) {
        RowTile acc[CB] = {};
        for (int64_t i = i_lo; i < i_hi; ++i) {
          for (int64_t j = 0; j < K; ++j) {
            const RowTile kv = load_tile(kbuf.data() + (i * K + j) * row_len + x0 + 2 * p - j);
            const float* gp = gbuf.data() + (c0 * K + i) * row_len + x0 + 2 * p - j;
            if (nb == CB) {
              for (int cb = 0; cb < CB; ++cb) acc[cb] += load_tile(gp + cb * K * row_len) * kv;
            } else {
              for (int64_t cb = 0; cb < nb; ++cb) acc[cb] += load_tile(gp + cb * K * row_len) * kv;
            }
          }
        }
        for (int64_t cb = 0; cb < nb; ++cb) store_tile(gx0 + cb * hw + x0, acc[cb]);
      });
    }
  }
}

// dL/dX for stride > 1 as a scatter, one task per (b, g, input row y): output row h with
// h*s + i - p == y adds go[c][h][w] * k[i*K+j][h][w] to padded column q = w*s + j. Stored by
// phase (q % s = j % s, position q / s = w + j / s), each tap's contribution is a unit-stride
// row, so whole tiles accumulate; rows are zero-padded to whole tiles.
DCDC_MULTIVERSION void backward_input_f32_strided(const float* go, const float* k, float* gx,
                                                  const Geometry& g, int64_t begin, int64_t end) {
  const int64_t s = g.stride, K = g.kernel_size, p = g.pad, cpg = g.channels_per_group();
  const int64_t hw_out = g.out_h * g.out_w, hw_in = g.height * g.width;
  const int64_t tiles_w = (g.out_w + TW - 1) / TW * TW;
  const int64_t phase_len = std::max(tiles_w + (K - 1) / s + 1, (g.width - 1 + p) / s + 1);
  std::vector<float> acc(s * phase_len), go_row(tiles_w, 0.f), k_rows(K * K * tiles_w, 0.f);
  std::vector<int64_t> rows_h(K, -1), tap_offset(K);
  for (int64_t j = 0; j < K; ++j) tap_offset[j] = (j % s) * phase_len + j / s;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t y = task % g.height, bg = task / g.height, grp = bg % g.groups, b = bg / g.groups;
    for (int64_t i = 0; i < K; ++i) {  // the output row h of kernel row i, if any
      const int64_t num = y + p - i;
      rows_h[i] = num >= 0 && num % s == 0 && num / s < g.out_h ? num / s : -1;
      if (rows_h[i] < 0) continue;
      for (int64_t j = 0; j < K; ++j)
        std::copy_n(k + (bg * g.taps() + i * K + j) * hw_out + rows_h[i] * g.out_w, g.out_w,
                    k_rows.begin() + (i * K + j) * tiles_w);
    }
    for (int64_t c = grp * cpg; c < (grp + 1) * cpg; ++c) {
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t i = 0; i < K; ++i) {
        if (rows_h[i] < 0) continue;
        std::copy_n(go + (b * g.channels + c) * hw_out + rows_h[i] * g.out_w, g.out_w,
                    go_row.begin());
        for (int64_t j = 0; j < K; ++j) {
          float* a = acc.data() + tap_offset[j];
          const float* kr = k_rows.data() + (i * K + j) * tiles_w;
          for (int64_t w0 = 0; w0 < tiles_w; w0 += TW)
            store_tile(a + w0, load_tile(a + w0) + load_tile(go_row.data() + w0) * load_tile(kr + w0));
        }
      }
      float* gx_row = gx + (b * g.channels + c) * hw_in + y * g.width;
      for (int64_t phase = 0; phase < s; ++phase)  // x = pos * s + phase - p
        for (int64_t pos = 0; pos < phase_len; ++pos) {
          const int64_t xc = pos * s + phase - p;
          if (xc >= 0 && xc < g.width) gx_row[xc] = acc[phase * phase_len + pos];
        }
    }
  }
}

at::Tensor lsa_forward(const at::Tensor& x_in, const at::Tensor& kernels_in, int64_t kernel_size,
                       int64_t stride) {
  const Geometry g = make_geometry(x_in, kernels_in, kernel_size, stride);
  const at::Tensor x = x_in.contiguous(), kernels = kernels_in.contiguous();
  at::Tensor out = dcdc::empty_output({g.batch, g.channels, g.out_h, g.out_w}, x.options());
  if (x.scalar_type() == at::kFloat && g.out_w >= TW) {
    const float* xp = x.data_ptr<float>();
    const float* kp = kernels.data_ptr<float>();
    float* op = out.data_ptr<float>();
    const int64_t tasks = g.batch * g.groups * ((g.out_h + RB - 1) / RB);
    at::parallel_for(0, tasks, (g.grain() + RB - 1) / RB, [&](int64_t begin, int64_t end) {
      forward_f32(xp, kp, op, g, begin, end);
    });
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lsa_forward", [&] {
    forward_kernel<scalar_t>(x.data_ptr<scalar_t>(), kernels.data_ptr<scalar_t>(),
                             out.data_ptr<scalar_t>(), g);
  });
  return out;
}

std::vector<at::Tensor> lsa_backward(const at::Tensor& grad_out_in, const at::Tensor& x_in,
                                     const at::Tensor& kernels_in, int64_t kernel_size,
                                     int64_t stride, bool need_x, bool need_kernels) {
  // need_x / need_kernels are cleared once the float fast path has produced that gradient.
  const Geometry g = make_geometry(x_in, kernels_in, kernel_size, stride);
  TORCH_CHECK(grad_out_in.sizes() == at::IntArrayRef({g.batch, g.channels, g.out_h, g.out_w}) &&
                  grad_out_in.scalar_type() == x_in.scalar_type(),
              "lsa_aggregate backward: grad_out has shape ", grad_out_in.sizes());
  const at::Tensor grad_out = grad_out_in.contiguous(), x = x_in.contiguous(),
                   kernels = kernels_in.contiguous();
  at::Tensor grad_x, grad_k;
  if (x.scalar_type() == at::kFloat && g.out_w >= TW) {
    const float* gop = grad_out.data_ptr<float>();
    if (need_x) {
      grad_x = at::empty_like(x);
      float* gxp = grad_x.data_ptr<float>();
      const float* kp = kernels.data_ptr<float>();
      at::parallel_for(0, g.batch * g.groups * g.height, g.grain(), [&](int64_t begin, int64_t end) {
        if (g.stride == 1) {
          backward_input_f32_s1(gop, kp, gxp, g, begin, end);
        } else {
          backward_input_f32_strided(gop, kp, gxp, g, begin, end);
        }
      });
      need_x = false;
    }
    if (need_kernels) {
      grad_k = at::empty_like(kernels);
      float* gkp = grad_k.data_ptr<float>();
      const float* xp = x.data_ptr<float>();
      at::parallel_for(0, g.batch * g.groups * g.out_h, g.grain(), [&](int64_t begin, int64_t end) {
        backward_kernels_f32(gop, xp, gkp, g, begin, end);
      });
      need_kernels = false;
    }
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lsa_backward", [&] {
    if (need_x) {
      grad_x = at::empty_like(x);
      backward_input_kernel<scalar_t>(grad_out.data_ptr<scalar_t>(),
                                      kernels.data_ptr<scalar_t>(), grad_x.data_ptr<scalar_t>(), g);
    }
    if (need_kernels) {
      grad_k = at::empty_like(kernels);
      backward_kernels_kernel<scalar_t>(grad_out.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                                        grad_k.data_ptr<scalar_t>(), g);
    }
  });
  return {grad_x, grad_k};
}

// Checks shared by the fused entry points: float32 x (B, C, H, W), hidden (B, R, H', W') and
// weight (G*K*K, R); the kernels they stand for are (B, G, K*K, H', W').
Geometry make_fused_geometry(const char* name, const at::Tensor& x, const at::Tensor& hidden,
                             const at::Tensor& weight, int64_t kernel_size, int64_t stride) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && hidden.scalar_type() == at::kFloat &&
                  weight.scalar_type() == at::kFloat,
              name, ": float32 CPU tensors only; use the unfused path otherwise");
  const int64_t taps = kernel_size * kernel_size;
  TORCH_CHECK(hidden.dim() == 4 && weight.dim() == 2 && weight.size(1) == hidden.size(1) &&
                  taps > 0 && weight.size(0) % taps == 0,
              name, ": hidden ", hidden.sizes(), " and weight ", weight.sizes(),
              " do not match (need weight (G*K*K, R) for hidden (B, R, H', W'), K = ",
              kernel_size, ")");
  const Geometry g = make_geometry(
      x, {hidden.size(0), weight.size(0) / taps, taps, hidden.size(2), hidden.size(3)},
      kernel_size, stride);
  TORCH_CHECK(g.out_w >= TW, name, ": needs maps at least ", TW, " columns wide");
  return g;
}

// With gsi_z (B, m, H', W') and gsi_weight (B, C, m), the output also gets DCDCConv2d's global
// branch, gsi_weight[b] @ gsi_z[b] (add_gsi_tile).
at::Tensor lsa_fused_forward(const at::Tensor& x_in, const at::Tensor& hidden_in,
                             const at::Tensor& weight_in, const c10::optional<at::Tensor>& bias_in,
                             int64_t kernel_size, int64_t stride,
                             const c10::optional<at::Tensor>& gsi_z_in,
                             const c10::optional<at::Tensor>& gsi_weight_in) {
  const Geometry g =
      make_fused_geometry("lsa_fused_forward", x_in, hidden_in, weight_in, kernel_size, stride);
  const int64_t taps = g.taps();
  const at::Tensor x = x_in.contiguous(), hidden = hidden_in.contiguous();
  const at::Tensor weight_t =
      weight_in.view({g.groups, taps, weight_in.size(1)}).transpose(1, 2).contiguous();
  at::Tensor bias;
  if (bias_in.has_value() && bias_in->defined()) {
    bias = bias_in->contiguous();
    TORCH_CHECK(bias.scalar_type() == at::kFloat && bias.numel() == weight_in.size(0),
                "lsa_fused_forward: bias must hold ", weight_in.size(0), " float32 values");
  }
  at::Tensor gsi_z, gsi_weight;
  TORCH_CHECK(gsi_z_in.has_value() == gsi_weight_in.has_value(),
              "lsa_fused_forward: give both gsi_z and gsi_weight, or neither");
  if (gsi_z_in.has_value()) {
    gsi_z = gsi_z_in->contiguous();
    gsi_weight = gsi_weight_in->contiguous();
    const int64_t m = gsi_weight.dim() == 3 ? gsi_weight.size(2) : -1;
    TORCH_CHECK(gsi_z.scalar_type() == at::kFloat && gsi_weight.scalar_type() == at::kFloat &&
                    gsi_z.sizes() == at::IntArrayRef({g.batch, m, g.out_h, g.out_w}) &&
                    gsi_weight.sizes() == at::IntArrayRef({g.batch, g.channels, m}),
                "lsa_fused_forward: need float32 gsi_z (B, m, H', W') and gsi_weight (B, C, m) "
                "for output (", g.batch, ", ", g.channels, ", ", g.out_h, ", ", g.out_w,
                "), got ", gsi_z.sizes(), " and ", gsi_weight.sizes());
  }
  at::Tensor out = dcdc::empty_output({g.batch, g.channels, g.out_h, g.out_w}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* hp = hidden.data_ptr<float>();
  const float* zp = gsi_z.defined() ? gsi_z.data_ptr<float>() : nullptr;
  const float* gwp = gsi_weight.defined() ? gsi_weight.data_ptr<float>() : nullptr;
  const int64_t gsi_m = gsi_weight.defined() ? gsi_weight.size(2) : 0;
  const float* wp = weight_t.data_ptr<float>();
  const float* bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  const int64_t reduced = weight_in.size(1);
  const int64_t rb = fused_rows(g), tasks = g.batch * g.groups * ((g.out_h + rb - 1) / rb);
  at::parallel_for(0, tasks, (g.grain() + rb - 1) / rb, [&](int64_t begin, int64_t end) {
    fused_forward_f32(xp, hp, wp, bp, reduced, zp, gwp, gsi_m, op, g, begin, end);
  });
  return out;
}

// (grad_hidden, grad_weight, grad_bias) of lsa_fused_forward's generator inputs.
std::vector<at::Tensor> lsa_fused_backward_generator(const at::Tensor& grad_out_in,
                                                     const at::Tensor& x_in,
                                                     const at::Tensor& hidden_in,
                                                     const at::Tensor& weight_in,
                                                     int64_t kernel_size, int64_t stride) {
  const Geometry g = make_fused_geometry("lsa_fused_backward_generator", x_in, hidden_in,
                                         weight_in, kernel_size, stride);
  TORCH_CHECK(grad_out_in.scalar_type() == at::kFloat &&
                  grad_out_in.sizes() == at::IntArrayRef({g.batch, g.channels, g.out_h, g.out_w}),
              "lsa_fused_backward_generator: grad_out has shape ", grad_out_in.sizes(), " ",
              grad_out_in.scalar_type());
  const at::Tensor go = grad_out_in.contiguous(), x = x_in.contiguous(),
                   hidden = hidden_in.contiguous(), weight = weight_in.contiguous();
  const int64_t reduced = weight.size(1), rows_out = weight.size(0);
  at::Tensor grad_hidden = at::empty_like(hidden);
  const int64_t threads = at::get_num_threads();
  // per-thread partial sums of the weight and bias gradients, in double
  at::Tensor partial = at::zeros({threads, rows_out * (reduced + 1)}, x.options().dtype(at::kDouble));
  const float* gop = go.data_ptr<float>();
  const float* xp = x.data_ptr<float>();
  const float* hp = hidden.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* ghp = grad_hidden.data_ptr<float>();
  double* pp = partial.data_ptr<double>();
  at::parallel_for(0, g.batch * g.out_h, 1, [&](int64_t begin, int64_t end) {
    double* mine = pp + at::get_thread_num() * rows_out * (reduced + 1);
    fused_backward_generator_f32(gop, xp, hp, wp, reduced, ghp, mine, mine + rows_out * reduced,
                                 g, begin, end);
  });
  const at::Tensor total = partial.sum(0).to(at::kFloat);
  return {grad_hidden, total.narrow(0, 0, rows_out * reduced).view({rows_out, reduced}),
          total.narrow(0, rows_out * reduced, rows_out)};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "DCDC native CPU kernels (LSA aggregation, paper Eq. 5; generator depth-wise convs)";
  m.def("lsa_forward", &lsa_forward, "LSA aggregation forward (CPU)");
  m.def("lsa_backward", &lsa_backward, "LSA aggregation backward (CPU): (grad_x, grad_kernels)");
  m.def("depthwise_supported", &dcdc::depthwise_supported,
        "whether the native depth-wise conv handles this kernel size");
  m.def("depthwise_forward", &dcdc::depthwise_forward, "depth-wise KxK conv, stride 1 (CPU)");
  m.def("depthwise_backward", &dcdc::depthwise_backward,
        "depth-wise conv backward (CPU): (grad_x, grad_weight)");
  m.def("lsa_fused_backward_generator", &lsa_fused_backward_generator,
        "gradients of lsa_fused_forward's hidden, weight, bias (CPU, float32)");
  m.def("pointwise_forward", &dcdc::pointwise_forward, py::arg("x"), py::arg("weight_t"),
        py::arg("bias"), py::arg("depthwise_weight"), py::arg("relu"),
        "inference 1x1 conv, optionally after a depth-wise conv, with bias and ReLU (CPU)");
  m.def("lsa_fused_forward", &lsa_fused_forward, py::arg("x"), py::arg("hidden"),
        py::arg("weight"), py::arg("bias"), py::arg("kernel_size"), py::arg("stride"),
        py::arg("gsi_z") = py::none(), py::arg("gsi_weight") = py::none(),
        "LSA aggregation with the kernels generated on the fly by a 1x1 conv (CPU, float32); "
        "with gsi_z and gsi_weight, plus gsi_weight @ gsi_z per sample (DCDCConv2d's GSI)");
}
