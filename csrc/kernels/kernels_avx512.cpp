// AVX-512 F variants of the float-weight matmuls (f32, bf16, f16 weights; 16 lanes, 32 registers
// for a 4-token x 6-row register tile); every other entry of the table is AVX2's. This file alone
// is compiled with -mavx512f -mavx512bw -mavx512vl (plus the AVX2 flags) and its table is offered
// only when CPUID and XCR0 report AVX-512 F/BW/VL.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "dispatch.h"
#include "kernels.h"

namespace exaone {
namespace kernels {
namespace {

// Weight loaders: 16 consecutive weights widened to f32, and a single one for the K tail.
struct F32W {
  using T = float;
  static __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
  static float load1(const float* p) { return *p; }
};
struct BF16W {
  using T = uint16_t;
  static __m512 load16(const uint16_t* p) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  }
  static float load1(const uint16_t* p) {
    const uint32_t bits = uint32_t(*p) << 16;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  }
};
struct F16W {
  using T = uint16_t;
  static __m512 load16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static float load1(const uint16_t* p) { return _cvtsh_ss(*p); }
};

// MT rows of x against NT rows of w: MT*NT accumulators, each weight vector widened once and used
// MT times (the AVX2 tile of kernels_avx2.cpp at twice the width and twice the rows).
template <class L, int MT, int NT>
void tile(const float* x, int64_t K, const typename L::T* w, float* y, int64_t ldy) {
  __m512 acc[MT][NT];
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < NT; ++j) acc[i][j] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    if (MT == 1 && ((k * int64_t(sizeof(typename L::T))) & 63) == 0)  // decode: next tile's rows
      for (int j = 0; j < NT; ++j) _mm_prefetch(reinterpret_cast<const char*>(w + (j + NT) * K + k), _MM_HINT_T0);
    __m512 wv[NT];
    for (int j = 0; j < NT; ++j) wv[j] = L::load16(w + j * K + k);
    for (int i = 0; i < MT; ++i) {
      const __m512 xv = _mm512_loadu_ps(x + i * K + k);
      for (int j = 0; j < NT; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MT; ++i) {
    for (int j = 0; j < NT; ++j) {
      float s = _mm512_reduce_add_ps(acc[i][j]);
      for (int64_t kk = k; kk < K; ++kk) s += x[i * K + kk] * L::load1(w + j * K + kk);
      y[i * ldy + j] = s;
    }
  }
}

// kernels_simd.inc's GQA attention loop needs these; the table below takes AVX2's attention.
float dot_f32(const float* a, const float* b, int64_t n) { return avx2_table()->dot_f32(a, b, n); }
void axpy_f32(float a, const float* x, float* y, int64_t n) { avx2_table()->axpy_f32(a, x, y, n); }
void softmax_f32(float* x, int64_t n) { avx2_table()->softmax_f32(x, n); }

// The sampler's mass above K cut-offs: a compare into a mask and a masked add per cut-off and 16
// elements; float partial sums per 128 elements, then double.
template <int K>
void sums_at_least_k(const float* x, int64_t n, const float* thresholds, double* out) {
  __m512 t[K];
  double tot[K];
  for (int j = 0; j < K; ++j) t[j] = _mm512_set1_ps(thresholds[j]), tot[j] = 0.0;
  int64_t i = 0;
  for (; i + 128 <= n; i += 128) {
    __m512 acc[K];
    for (int j = 0; j < K; ++j) acc[j] = _mm512_setzero_ps();
    for (int v = 0; v < 8; ++v) {
      const __m512 xv = _mm512_loadu_ps(x + i + 16 * v);
      for (int j = 0; j < K; ++j)
        acc[j] = _mm512_mask_add_ps(acc[j], _mm512_cmp_ps_mask(xv, t[j], _CMP_GE_OQ), acc[j], xv);
    }
    for (int j = 0; j < K; ++j) {
      const __m512d d = _mm512_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(acc[j])),
                                      _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[j]), 1))));
      tot[j] += _mm512_reduce_add_pd(d);
    }
  }
  for (; i < n; ++i)
    for (int j = 0; j < K; ++j)
      if (x[i] >= thresholds[j]) tot[j] += double(x[i]);
  for (int j = 0; j < K; ++j) out[j] = tot[j];
}

void sums_at_least_f32(const float* x, int64_t n, const float* thresholds, int64_t k, double* out) {
  if (k == 1) return sums_at_least_k<1>(x, n, thresholds, out);
  for (int64_t j = 0; j < k; j += 8) {  // 8 cut-offs per pass (the top-p bracket uses exactly 8)
    const int64_t m = std::min<int64_t>(8, k - j);
    if (m == 8) sums_at_least_k<8>(x, n, thresholds + j, out + j);
    else for (int64_t q = 0; q < m; ++q) sums_at_least_k<1>(x, n, thresholds + j + q, out + j + q);
  }
}

constexpr int kRowsPerTile = 6;
#include "kernels_simd.inc"

}  // namespace

const KernelTable* avx512_table() {
  const KernelTable* avx2 = avx2_table();
  if (!avx2) return nullptr;
  static const KernelTable table = [&] {
    KernelTable t = *avx2;
    t.name = "avx512";
    t.matmul_f32 = matmul_f32;
    t.matmul_bf16 = matmul_bf16;
    t.matmul_f16 = matmul_f16;
    t.sums_at_least_f32 = sums_at_least_f32;
    return t;
  }();
  return &table;
}

}  // namespace kernels
}  // namespace exaone
