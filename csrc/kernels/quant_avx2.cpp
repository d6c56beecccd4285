// AVX2 variants of the quantized kernels (quant.h). Compiled alone with -mavx2 -mfma -mf16c;
// everything here has internal linkage so no AVX2 code reaches paths a CPU without it runs.
//
// Integer dot products of 32 int8 pairs: _mm256_maddubs_epi16 multiplies unsigned by signed bytes
// and adds pairs with int16 saturation, so signed weights use the sign trick: |w| (unsigned, at
// most 128) times x * sign(w) (|x| <= 127 by construction of BlockA8) keeps every pair sum within
// 2 * 128 * 127 = 32512 < 32767. int4 nibbles u (0..15) go in unsigned as they are (pair sums at
// most 2 * 15 * 127); Q4G then subtracts 8 * Σ q_x in int32, so Σ (u - 8) q_x is exact too. Every
// block's integer sum equals the scalar reference's; only the f32 accumulation order differs.
// _mm256_madd_epi16 with ones widens to 8 int32 partial sums per block, scaled and accumulated in
// f32 lanes.
//
// Tiles: decode (T = 1) runs one token against 4 rows, so the weights stream once with four
// independent accumulators; with groups of 64 or more it sums a group's blocks scaled by the
// activation scale only and applies the f16 weight scale once per group. Prefill runs 4 tokens x
// 2 rows, reusing each unpacked weight block for 4 tokens and each activation block for 2 rows.
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

// ---- weight block loaders ----------------------------------------------------------------------

// Two consecutive 32-weight blocks (b, b + 1) of one row as int8 vectors: signed for Q8G, the
// unsigned nibbles u for Q4G / Q4GA. `row` is the row's first byte.
template <QuantFormat F>
inline void load_pair(const uint8_t* row, int64_t b, __m256i& w0, __m256i& w1) {
  if constexpr (F == QuantFormat::Q8G) {
    w0 = loadu256(row + b * 32);
    w1 = loadu256(row + b * 32 + 32);
  } else {
    const __m256i raw = loadu256(row + b * 16);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    w0 = _mm256_and_si256(raw, m4);
    w1 = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
  }
}

// The lone last block when K / 32 is odd.
template <QuantFormat F>
inline __m256i load_tail(const uint8_t* row, int64_t b) {
  if constexpr (F == QuantFormat::Q8G) return loadu256(row + b * 32);
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + b * 16));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), _mm256_set1_epi8(0x0f));
}

// What one token's block contributes, loaded once and shared by every weight row of a tile.
struct XBlock {
  __m256i q;     // the 32 int8 activations
  __m256i corr;  // Q4G: 8 * Σ q in lane 0 (Σ (u - 8) q = Σ u q - 8 Σ q)
  __m256 d;      // activation scale, broadcast
  float dsum;    // Q4GA: d * Σ q (the min term)
};

template <QuantFormat F>
inline XBlock load_x(const BlockA8& a) {
  XBlock x;
  x.q = loadu256(a.qs);
  x.d = _mm256_set1_ps(a.d);
  if constexpr (F == QuantFormat::Q4G)  // upper lanes zero (a cast would leave them undefined)
    x.corr = _mm256_set_m128i(_mm_setzero_si128(), _mm_cvtsi32_si128(8 * a.sum));
  if constexpr (F == QuantFormat::Q4GA) x.dsum = a.d * float(a.sum);
  return x;
}

// 8 int32 partial sums adding up to the block's exact integer dot product: Σ q_w q_x with the
// signed weight (Q8G, and Q4G as u - 8), Σ u q_x for Q4GA.
template <QuantFormat F>
inline __m256i dot_block(__m256i w, const XBlock& x) {
  const __m256i ones = _mm256_set1_epi16(1);
  if constexpr (F == QuantFormat::Q8G)
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x.q, w)), ones);
  const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(w, x.q), ones);  // u <= 15: no saturation
  if constexpr (F == QuantFormat::Q4G) return _mm256_sub_epi32(p, x.corr);
  return p;
}

// ---- matmul tiles ------------------------------------------------------------------------------

// Decode streams each weight byte once: fetch the same offset NT rows further on (the next tile)
// while this one computes, one cache line per row at a time, so the stream keeps memory busy.
template <QuantFormat F, int NT>
inline void prefetch_next_tile(const uint8_t* row, int64_t rb, int64_t b) {
  const int64_t off = F == QuantFormat::Q8G ? b * 32 : b * 16;  // byte offset of block b
  if (F == QuantFormat::Q8G || (b & 3) == 0)  // a pair is 64 bytes (int8) or 32 bytes (int4)
    _mm_prefetch(reinterpret_cast<const char*>(row + NT * rb + off), _MM_HINT_T0);
}

// y[i][j] = row n + j of w against token i (x[i]: its blocks), MT tokens by NT rows, one f16
// scale per block: acc += Σ_b dot_b * (s_g(b) * d_b). Any group size.
template <QuantFormat F, int MT, int NT>
void tile_per_block(const BlockA8* const* x, const QuantWeight& w, int64_t n, float* const* y) {
  const int64_t nb = w.blocks(), G = w.groups(), bpg = w.group / kQBlock, rb = w.row_bytes();
  const uint8_t* rows[NT];
  const uint16_t* srow[NT];
  const uint16_t* mrow[NT];
  for (int j = 0; j < NT; ++j) {
    rows[j] = static_cast<const uint8_t*>(w.qweight) + (n + j) * rb;
    srow[j] = w.scales + (n + j) * G;
    mrow[j] = F == QuantFormat::Q4GA ? w.mins + (n + j) * G : nullptr;
  }
  __m256 acc[MT][NT];
  float macc[MT][NT];  // Q4GA min term
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < NT; ++j) {
      acc[i][j] = _mm256_setzero_ps();
      macc[i][j] = 0.0f;
    }
  // group of block b without a division: bpg is 1, 2, 4, or the whole row
  const bool per_row = G == 1;
  const int sh = bpg == 1 ? 0 : bpg == 2 ? 1 : 2;
  auto step = [&](int64_t b, const XBlock* xb, const __m256i* wv, int j) {
    const int64_t g = per_row ? 0 : b >> sh;
    const __m256 s = _mm256_set1_ps(_cvtsh_ss(srow[j][g]));
    float m = 0.0f;
    if constexpr (F == QuantFormat::Q4GA) m = _cvtsh_ss(mrow[j][g]);
    for (int i = 0; i < MT; ++i) {
      const __m256 p = _mm256_cvtepi32_ps(dot_block<F>(wv[0], xb[i]));
      acc[i][j] = _mm256_fmadd_ps(p, _mm256_mul_ps(s, xb[i].d), acc[i][j]);
      if constexpr (F == QuantFormat::Q4GA) macc[i][j] += m * xb[i].dsum;
    }
  };
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    XBlock x0[MT], x1[MT];
    for (int i = 0; i < MT; ++i) {
      x0[i] = load_x<F>(x[i][b]);
      x1[i] = load_x<F>(x[i][b + 1]);
    }
    for (int j = 0; j < NT; ++j) {
      if constexpr (MT == 1) prefetch_next_tile<F, NT>(rows[j], rb, b);  // decode: stream
      __m256i w0, w1;
      load_pair<F>(rows[j], b, w0, w1);
      step(b, x0, &w0, j);
      step(b + 1, x1, &w1, j);
    }
  }
  if (b < nb) {  // odd block count: the row's last block
    XBlock x0[MT];
    for (int i = 0; i < MT; ++i) x0[i] = load_x<F>(x[i][b]);
    for (int j = 0; j < NT; ++j) {
      const __m256i w0 = load_tail<F>(rows[j], b);
      step(b, x0, &w0, j);
    }
  }
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < NT; ++j) y[i][j] = hsum(acc[i][j]) + macc[i][j];
}

// Decode tile (one token, NT rows) for groups of two or more blocks: the blocks of a group are
// accumulated with the activation scale alone (shared by the NT rows), and each group's sum is
// scaled by its f16 scale once: acc += s_g * Σ_{b in g} dot_b * d_b.
template <QuantFormat F, int NT>
void tile_grouped(const BlockA8* xq, const QuantWeight& w, int64_t n, float* y) {
  const int64_t nb = w.blocks(), G = w.groups(), bpg = w.group / kQBlock, rb = w.row_bytes();
  const uint8_t* rows[NT];
  for (int j = 0; j < NT; ++j) rows[j] = static_cast<const uint8_t*>(w.qweight) + (n + j) * rb;
  __m256 acc[NT];
  float macc[NT];
  for (int j = 0; j < NT; ++j) {
    acc[j] = _mm256_setzero_ps();
    macc[j] = 0.0f;
  }
  for (int64_t g = 0; g < G; ++g) {
    const int64_t b0 = g * bpg, b1 = b0 + bpg < nb ? b0 + bpg : nb;
    __m256 accg[NT];
    for (int j = 0; j < NT; ++j) accg[j] = _mm256_setzero_ps();
    float dsum = 0.0f;
    int64_t b = b0;
    for (; b + 2 <= b1; b += 2) {  // groups start on even blocks (bpg even, or one per-row group)
      const XBlock x0 = load_x<F>(xq[b]), x1 = load_x<F>(xq[b + 1]);
      const __m256 d0 = x0.d, d1 = x1.d;
      if constexpr (F == QuantFormat::Q4GA) dsum += x0.dsum + x1.dsum;
      for (int j = 0; j < NT; ++j) {
        prefetch_next_tile<F, NT>(rows[j], rb, b);
        __m256i w0, w1;
        load_pair<F>(rows[j], b, w0, w1);
        accg[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_block<F>(w0, x0)), d0, accg[j]);
        accg[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_block<F>(w1, x1)), d1, accg[j]);
      }
    }
    if (b < b1) {  // odd block count: the row's last block
      const XBlock x0 = load_x<F>(xq[b]);
      const __m256 d0 = x0.d;
      if constexpr (F == QuantFormat::Q4GA) dsum += x0.dsum;
      for (int j = 0; j < NT; ++j)
        accg[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_block<F>(load_tail<F>(rows[j], b), x0)), d0, accg[j]);
    }
    for (int j = 0; j < NT; ++j) {
      acc[j] = _mm256_fmadd_ps(accg[j], _mm256_set1_ps(_cvtsh_ss(w.scales[(n + j) * G + g])), acc[j]);
      if constexpr (F == QuantFormat::Q4GA) macc[j] += _cvtsh_ss(w.mins[(n + j) * G + g]) * dsum;
    }
  }
  for (int j = 0; j < NT; ++j) y[j] = hsum(acc[j]) + macc[j];
}

template <QuantFormat F, int NT>
void tile_tokens(int mt, const BlockA8* const* x, const QuantWeight& w, int64_t n, float* const* y) {
  switch (mt) {
    case 4: tile_per_block<F, 4, NT>(x, w, n, y); break;
    case 3: tile_per_block<F, 3, NT>(x, w, n, y); break;
    case 2: tile_per_block<F, 2, NT>(x, w, n, y); break;
    default: tile_per_block<F, 1, NT>(x, w, n, y); break;
  }
}

template <QuantFormat F>
void matmul(const BlockA8* xq, int64_t T, const QuantWeight& w, int64_t n0, int64_t n1, float* y,
            int64_t ldy) {
  const int64_t nb = w.blocks();
  if (T == 1) {  // decode: GEMV, 4 rows per pass streaming once through the weights
    int64_t n = n0;
    if (w.group > kQBlock) {
      for (; n + 4 <= n1; n += 4) tile_grouped<F, 4>(xq, w, n, y + n);
      for (; n < n1; ++n) tile_grouped<F, 1>(xq, w, n, y + n);
    } else {
      const BlockA8* x[1] = {xq};
      for (; n + 4 <= n1; n += 4) {
        float* yr[1] = {y + n};
        tile_per_block<F, 1, 4>(x, w, n, yr);
      }
      for (; n < n1; ++n) {
        float* yr[1] = {y + n};
        tile_per_block<F, 1, 1>(x, w, n, yr);
      }
    }
    return;
  }
  // prefill: blocks of tokens whose activations stay in L2 while the rows stream past them
  const int64_t t_block = 64;
  for (int64_t t0 = 0; t0 < T; t0 += t_block) {
    const int64_t t1 = t0 + t_block < T ? t0 + t_block : T;
    for (int64_t n = n0; n < n1; n += 2) {
      for (int64_t t = t0; t < t1; t += 4) {
        const int mt = int(t1 - t < 4 ? t1 - t : 4);
        const BlockA8* x[4];
        float* yr[4];
        for (int i = 0; i < mt; ++i) {
          x[i] = xq + (t + i) * nb;
          yr[i] = y + (t + i) * ldy + n;
        }
        if (n + 2 <= n1)
          tile_tokens<F, 2>(mt, x, w, n, yr);
        else
          tile_tokens<F, 1>(mt, x, w, n, yr);
      }
    }
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
