// AVX2 variants of the quantized kernels (quant.h). Compiled alone with -mavx2 -mfma -mf16c;
// everything here has internal linkage so no AVX2 code reaches paths a CPU without it runs.
//
// Integer dot products: _mm256_maddubs_epi16 multiplies unsigned by signed bytes and adds pairs
// with int16 saturation. Signed int8 weights use the sign trick: |w| (at most 127) times
// x * sign(w) (|x| <= 127 by construction of BlockA8), pair sums within 2 * 127 * 127 < 32767.
// int4 nibbles u (0..15) go in unsigned as they are; Q4G then subtracts 8 * Σ q_x in int32. Every
// block's integer sum equals the scalar reference's; only the f32 accumulation order differs.
//
// The row tiles of quant.h put 4 consecutive k of 8 rows in one 32-byte load, so a broadcast of
// 4 activation bytes multiplies all 8 rows at once and lane r of every sum belongs to row r: no
// horizontal reductions, and one f16 load gives the 8 rows' scales. Prefill reuses each unpacked
// load for 4 tokens.
#include <immintrin.h>

#include <cstring>

#include "avx2_common.h"
#include "quant.h"

namespace exaone {
namespace kernels {
namespace {

inline int32_t hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// ---- activations ------------------------------------------------------------------------------

void quantize_a8(const float* x, int64_t K, BlockA8* out) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t b = 0; b < K / kQBlock; ++b) {
    const float* xb = x + b * kQBlock;
    __m256 v[4];
    for (int i = 0; i < 4; ++i) v[i] = _mm256_loadu_ps(xb + 8 * i);
    // max(|v|, m) keeps m when |v| is NaN, as the scalar loop ignores NaN.
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) m = _mm256_max_ps(_mm256_and_ps(v[i], abs_mask), m);
    const float amax = hmax(m);
    BlockA8& o = out[b];
    const bool zero = !(amax >= 1e-30f);
    o.d = zero ? 0.0f : amax / 127.0f;
    const __m256 id = _mm256_set1_ps(zero ? 0.0f : 1.0f / o.d);
    __m256i q[4];
    for (int i = 0; i < 4; ++i) q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], id));  // nearest even
    const __m256i lo = _mm256_add_epi32(q[0], q[1]);
    o.sum_lo = hsum_i32(lo);
    o.sum = hsum_i32(_mm256_add_epi32(lo, _mm256_add_epi32(q[2], q[3])));
    o.dsum = o.d * float(o.sum);
    // packs work per 128-bit lane; the permutation restores element order.
    const __m256i q01 = _mm256_packs_epi32(q[0], q[1]), q23 = _mm256_packs_epi32(q[2], q[3]);
    const __m256i q8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(q01, q23), order);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o.qs), q8);
  }
}

// ---- matmul -------------------------------------------------------------------------------------

#include "quant_x86_matmul.inc"

// ---- weight quantizer sums ----------------------------------------------------------------------
// The scalar reference's 8 partial sums are these 8 lanes, with the same operations in the same
// order (no FMA contraction: plain mul then add), so both give identical sums.

inline void lanes_to_double(__m256 v, double* out) {
  alignas(32) float l[8];
  _mm256_store_ps(l, v);
  double s = 0.0;
  for (int j = 0; j < 8; ++j) s += l[j];
  *out = s;
}

inline __m256 round_ne8(__m256 v) {  // (v + 1.5 * 2^23) - 1.5 * 2^23, as the scalar code
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  return _mm256_sub_ps(_mm256_add_ps(v, magic), magic);
}

void quant_sym_sums(const float* w, int64_t n, float is, float lo, float hi, double* swq, double* sqq) {
  const __m256 vis = _mm256_set1_ps(is), vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
  __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; i += 8) {
    const __m256 wv = _mm256_loadu_ps(w + i);
    __m256 q = round_ne8(_mm256_mul_ps(wv, vis));
    q = _mm256_min_ps(_mm256_max_ps(q, vlo), vhi);
    a = _mm256_add_ps(a, _mm256_mul_ps(wv, q));
    b = _mm256_add_ps(b, _mm256_mul_ps(q, q));
  }
  lanes_to_double(a, swq);
  lanes_to_double(b, sqq);
}

void quant_asym_sums(const float* w, int64_t n, float lo, float is, double* su, double* suu, double* suw) {
  const __m256 vis = _mm256_set1_ps(is), vlo = _mm256_set1_ps(lo);
  const __m256 zero = _mm256_setzero_ps(), fifteen = _mm256_set1_ps(15.0f);
  __m256 a = zero, b = zero, c = zero;
  for (int64_t i = 0; i < n; i += 8) {
    const __m256 wv = _mm256_loadu_ps(w + i);
    __m256 u = round_ne8(_mm256_mul_ps(_mm256_sub_ps(wv, vlo), vis));
    u = _mm256_min_ps(_mm256_max_ps(u, zero), fifteen);
    a = _mm256_add_ps(a, u);
    b = _mm256_add_ps(b, _mm256_mul_ps(u, u));
    c = _mm256_add_ps(c, _mm256_mul_ps(u, wv));
  }
  lanes_to_double(a, su);
  lanes_to_double(b, suu);
  lanes_to_double(c, suw);
}

}  // namespace

const QuantKernelTable* quant_avx2_table() {
  static const QuantKernelTable table = {
      "avx2",
      quantize_a8,
      EXAONE_QUANT_MATMULS,
      quant_scalar_table().dequant_row,  // only used for embedding rows; not worth a variant
      quant_sym_sums,
      quant_asym_sums,
  };
  return &table;
}

}  // namespace kernels
}  // namespace exaone
