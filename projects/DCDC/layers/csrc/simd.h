// Shared by the native CPU kernels: function multiversioning and a row-tile vector type.
#pragma once

#include <cstdint>

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

#if defined(__GNUC__)
#define DCDC_HAVE_ROW_TILE 1
// TW floats as one vector (GCC/clang vector extension: one zmm, two ymm or four xmm registers,
// by target). GCC does not vectorize broadcast-times-row loops on plain arrays on its own.
typedef float RowTile __attribute__((vector_size(TW * sizeof(float))));
DCDC_INLINE RowTile load_tile(const float* p) {
  RowTile v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
DCDC_INLINE void store_tile(float* p, const RowTile& v) { __builtin_memcpy(p, &v, sizeof(v)); }
#endif

}  // namespace dcdc
