// Helpers shared by the AVX2 translation units (and only them: they are compiled with -mavx2).
// Internal linkage, so no AVX2 code can be merged into another file's copy at link time.
#pragma once
#include <immintrin.h>

namespace exaone {
namespace kernels {
namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace
}  // namespace kernels
}  // namespace exaone
