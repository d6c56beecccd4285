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

inline __m256i loadu256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// Stops GCC from reassociating a chain of integer adds into a tree whose partial sums it then
// spills to the stack (it does for the 4-token int8 tile): the value must be in a register here.
inline void keep_in_register(__m256i& v) {
#if defined(__GNUC__)
  __asm__("" : "+x"(v));
#else
  (void)v;
#endif
}

// 4 bytes at p (4 consecutive k of one token) in every 32-bit lane.
inline __m256i bcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
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
    o.sum = hsum_i32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
    // packs work per 128-bit lane; the permutation restores element order.
    const __m256i q01 = _mm256_packs_epi32(q[0], q[1]), q23 = _mm256_packs_epi32(q[2], q[3]);
    const __m256i q8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(q01, q23), order);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o.qs), q8);
  }
}

// ---- matmul -------------------------------------------------------------------------------------

// The 8 int32 sums (one per row of a full row tile) of one 32-value block against MT tokens'
// activation blocks xb[i]: Σ_k q[r, k] * qs_i[k], with q the signed weight (Q8G; Q4G as u - 8) or
// the unsigned nibble u (Q4GA). p is the block's 128 (int4) or 256 (int8) bytes in the tile.
template <QuantFormat F, int MT>
inline void block_dot(const uint8_t* p, const BlockA8* const* xb, __m256i* isum) {
  const __m256i ones = _mm256_set1_epi16(1);
  if constexpr (F == QuantFormat::Q8G) {
    __m256i acc[MT];
    for (int i = 0; i < MT; ++i) acc[i] = _mm256_setzero_si256();
    for (int q = 0; q < 8; ++q) {  // 4 k of 8 rows per load
      const __m256i wv = loadu256(p + 32 * q);
      const __m256i aw = _mm256_sign_epi8(wv, wv);
      for (int i = 0; i < MT; ++i) {
        const __m256i xs = _mm256_sign_epi8(bcast4(xb[i]->qs + 4 * q), wv);
        acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(aw, xs), ones));
        keep_in_register(acc[i]);
      }
    }
    for (int i = 0; i < MT; ++i) isum[i] = acc[i];
  } else {
    // Nibbles u <= 15 against |qs| <= 127: a maddubs lane is at most 2 * 15 * 127 = 3810, so the 8
    // lanes a row collects over the block (<= 30480) still fit int16. The block is unpacked into 8
    // registers first, then each token runs through it: one accumulator live at a time keeps the
    // compiler from spilling.
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256i lo[4], hi[4];  // k 0-3 and k 4-7 of each 8-k run, 8 rows
    for (int o = 0; o < 4; ++o) {
      const __m256i raw = loadu256(p + 32 * o);
      lo[o] = _mm256_and_si256(raw, m4);
      hi[o] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
    }
    for (int i = 0; i < MT; ++i) {
      const int8_t* a = xb[i]->qs;
      __m256i acc = _mm256_maddubs_epi16(lo[0], bcast4(a));
      acc = _mm256_add_epi16(acc, _mm256_maddubs_epi16(hi[0], bcast4(a + 4)));
      for (int o = 1; o < 4; ++o) {
        acc = _mm256_add_epi16(acc, _mm256_maddubs_epi16(lo[o], bcast4(a + 8 * o)));
        acc = _mm256_add_epi16(acc, _mm256_maddubs_epi16(hi[o], bcast4(a + 8 * o + 4)));
      }
      isum[i] = _mm256_madd_epi16(acc, ones);
      if constexpr (F == QuantFormat::Q4G)  // Σ (u - 8) q = Σ u q - 8 Σ q
        isum[i] = _mm256_sub_epi32(isum[i], _mm256_set1_epi32(8 * xb[i]->sum));
    }
  }
}

// y[i][0..8) = the 8 rows of the full row tile starting at n0 against token i (x[i]: its K / 32
// blocks): acc += isum_b * (s_g * d_b) [+ m_g * (d_b * sum_b) for Q4GA], one lane per row.
#ifndef EXAONE_QPF
#define EXAONE_QPF 512
#endif
constexpr int64_t kPrefetchDistance = EXAONE_QPF;

template <QuantFormat F, int MT>
void tile8(const BlockA8* const* x, const QuantWeight& w, int64_t n0, float* const* y) {
  const int64_t nb = w.blocks(), G = w.groups(), bpg = w.group / kQBlock;
  const int64_t block_bytes = F == QuantFormat::Q8G ? 256 : 128;
  const uint8_t* tile = static_cast<const uint8_t*>(w.qweight) + n0 * w.row_bytes();
  const uint16_t* st = w.scales + n0 * G;
  const uint16_t* mt = F == QuantFormat::Q4GA ? w.mins + n0 * G : nullptr;
  __m256 acc[MT];
  for (int i = 0; i < MT; ++i) acc[i] = _mm256_setzero_ps();
  for (int64_t g = 0; g < G; ++g) {
    const __m256 s = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(st + 8 * g)));
    __m256 m = _mm256_setzero_ps();
    if constexpr (F == QuantFormat::Q4GA)
      m = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(mt + 8 * g)));
    const int64_t b1 = (g + 1) * bpg < nb ? (g + 1) * bpg : nb;
    for (int64_t b = g * bpg; b < b1; ++b) {
      const uint8_t* p = tile + b * block_bytes;
      if constexpr (MT == 1)  // decode streams the tile once: keep the next lines on their way
        for (int64_t l = 0; l < block_bytes; l += 64)
          _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchDistance + l), _MM_HINT_T0);
      const BlockA8* xb[MT];
      for (int i = 0; i < MT; ++i) xb[i] = x[i] + b;
      __m256i isum[MT];
      block_dot<F, MT>(p, xb, isum);
      for (int i = 0; i < MT; ++i) {
        const __m256 d = _mm256_set1_ps(xb[i]->d);
        acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[i]), _mm256_mul_ps(s, d), acc[i]);
        if constexpr (F == QuantFormat::Q4GA)
          acc[i] = _mm256_fmadd_ps(m, _mm256_set1_ps(xb[i]->d * float(xb[i]->sum)), acc[i]);
      }
    }
  }
  for (int i = 0; i < MT; ++i) _mm256_storeu_ps(y[i], acc[i]);
}

template <QuantFormat F>
void tile8_tokens(int mt, const BlockA8* const* x, const QuantWeight& w, int64_t n0, float* const* y) {
  switch (mt) {
    case 4: tile8<F, 4>(x, w, n0, y); break;
    case 3: tile8<F, 3>(x, w, n0, y); break;
    case 2: tile8<F, 2>(x, w, n0, y); break;
    default: tile8<F, 1>(x, w, n0, y); break;
  }
}

template <QuantFormat F>
void matmul(const BlockA8* xq, int64_t T, const QuantWeight& w, int64_t n0, int64_t n1, float* y,
            int64_t ldy) {
  const int64_t nb = w.blocks();
  // Full row tiles here; a last partial tile (N % 8 rows) is left to the scalar reference.
  const int64_t full_end = n1 < (w.N & ~int64_t(7)) ? n1 : (w.N & ~int64_t(7));
  // Tokens in blocks whose activations stay in L2 while each row tile (in L1) meets all of them.
  const int64_t t_block = 64;
  for (int64_t t0 = 0; t0 < T; t0 += t_block) {
    const int64_t t1 = t0 + t_block < T ? t0 + t_block : T;
    for (int64_t n = n0; n < full_end; n += kTileRows) {
      for (int64_t t = t0; t < t1; t += 4) {
        const int mt = int(t1 - t < 4 ? t1 - t : 4);
        const BlockA8* x[4];
        float* yr[4];
        for (int i = 0; i < mt; ++i) {
          x[i] = xq + (t + i) * nb;
          yr[i] = y + (t + i) * ldy + n;
        }
        tile8_tokens<F>(mt, x, w, n, yr);
      }
    }
  }
  if (full_end < n1) {
    const QuantKernelTable& ref = quant_scalar_table();
    const QuantMatmulFn fn = F == QuantFormat::Q8G   ? ref.matmul_q8g_a8
                             : F == QuantFormat::Q4G ? ref.matmul_q4g_a8
                                                     : ref.matmul_q4ga_a8;
    fn(xq, T, w, full_end > n0 ? full_end : n0, n1, y, ldy);
  }
}

void matmul_q8g_a8(const BlockA8* xq, int64_t T, const QuantWeight& w, int64_t n0, int64_t n1,
                   float* y, int64_t ldy) {
  matmul<QuantFormat::Q8G>(xq, T, w, n0, n1, y, ldy);
}
void matmul_q4g_a8(const BlockA8* xq, int64_t T, const QuantWeight& w, int64_t n0, int64_t n1,
                   float* y, int64_t ldy) {
  matmul<QuantFormat::Q4G>(xq, T, w, n0, n1, y, ldy);
}
void matmul_q4ga_a8(const BlockA8* xq, int64_t T, const QuantWeight& w, int64_t n0, int64_t n1,
                    float* y, int64_t ldy) {
  matmul<QuantFormat::Q4GA>(xq, T, w, n0, n1, y, ldy);
}

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
      matmul_q8g_a8,
      matmul_q4g_a8,
      matmul_q4ga_a8,
      quant_scalar_table().dequant_row,  // only used for embedding rows; not worth a variant
      quant_sym_sums,
      quant_asym_sums,
  };
  return &table;
}

}  // namespace kernels
}  // namespace exaone
