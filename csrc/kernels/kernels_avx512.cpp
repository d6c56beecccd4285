// AVX-512 F variants of the float-weight matmuls (f32, bf16, f16 weights; 16 lanes, 32 registers
// for a 4-token x 6-row register tile); every other entry of the table is AVX2's. This file alone
// is compiled with -mavx512f -mavx512bw -mavx512vl (plus the AVX2 flags) and its table is offered
// only when CPUID and XCR0 report AVX-512 F/BW/VL.
#include <immintrin.h>

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
    return t;
  }();
  return &table;
}

}  // namespace kernels
}  // namespace exaone
