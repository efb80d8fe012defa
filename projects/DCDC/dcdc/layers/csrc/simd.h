// Shared by the native CPU kernels: function multiversioning and a row-tile vector type.
#pragma once

#include <cstdint>
#include <cstring>

// target_clones compiles a function for AVX-512 / AVX2+FMA / baseline x86-64 and picks one at
// load time (other compilers/architectures: one baseline build).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define DCDC_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DCDC_MULTIVERSION
#endif
#if defined(__GNUC__)
#define DCDC_INLINE inline __attribute__((always_inline))
#else
#define DCDC_INLINE inline
#endif

namespace dcdc {

constexpr int64_t TW = 16;  // output columns per register tile

// TW floats as one vector: the register tile of every float32 kernel. With GCC/clang a vector
// extension type (one zmm, two ymm or four xmm registers, by target); with plain float arrays
// GCC keeps the accumulators on the stack (a load-add-store chain per multiply-add, ~3x slower)
// and does not vectorize broadcast-times-row loops at all.
#if defined(__GNUC__)
typedef float RowTile __attribute__((vector_size(TW * sizeof(float))));
DCDC_INLINE RowTile broadcast_tile(float v) { return RowTile{} + v; }
#else
struct RowTile {
  float v[TW];
  float operator[](int64_t i) const { return v[i]; }
  float& operator[](int64_t i) { return v[i]; }
  RowTile& operator+=(const RowTile& o) {
    for (int64_t i = 0; i < TW; ++i) v[i] += o.v[i];
    return *this;
  }
  friend RowTile operator*(const RowTile& a, const RowTile& b) {
    RowTile r;
    for (int64_t i = 0; i < TW; ++i) r.v[i] = a.v[i] * b.v[i];
    return r;
  }
  friend RowTile operator*(float a, const RowTile& b) { return broadcast_tile(a) * b; }
  static RowTile broadcast_tile(float a) {
    RowTile r;
    for (int64_t i = 0; i < TW; ++i) r.v[i] = a;
    return r;
  }
};
DCDC_INLINE RowTile broadcast_tile(float v) { return RowTile::broadcast_tile(v); }
#endif
DCDC_INLINE RowTile load_tile(const float* p) {
  RowTile v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
DCDC_INLINE void store_tile(float* p, const RowTile& v) { std::memcpy(p, &v, sizeof(v)); }
DCDC_INLINE RowTile relu_tile(const RowTile& v) {
  RowTile r = v;
  for (int64_t i = 0; i < TW; ++i) r[i] = v[i] > 0.f ? v[i] : 0.f;
  return r;
}

}  // namespace dcdc
