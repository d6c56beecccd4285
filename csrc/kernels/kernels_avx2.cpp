// AVX2 + FMA + F16C variants of the kernel table. This file alone is compiled with those flags;
// everything in it has internal linkage and uses no inline library templates, so no AVX2 code can
// leak into the paths a CPU without AVX2 runs.
#include <immintrin.h>
#if defined(_MSC_VER)
#include <intrin.h>
#endif

#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "avx2_common.h"
#include "kernels.h"

namespace exaone {
namespace kernels {
namespace {

// exp(x) for 8 lanes: Cody-Waite reduction by ln2, degree-6 polynomial (about 1 ulp).
inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(x, _mm256_set1_ps(88.0f));  // keeps 2^n finite
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// Scalar exp for tails, same polynomial so a row's lanes agree with its tail.
inline float exp1(float x) {
  float lanes[8];
  _mm256_storeu_ps(lanes, exp8(_mm256_set1_ps(x)));
  return lanes[0];
}

// Weight loaders: 8 consecutive weights widened to f32, and a single one for the K tail.
struct F32W {
  using T = float;
  static __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
  static float load1(const float* p) { return *p; }
};
struct BF16W {
  using T = uint16_t;
  static __m256 load8(const uint16_t* p) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
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
  static __m256 load8(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static float load1(const uint16_t* p) { return _cvtsh_ss(*p); }
};
struct I8W {  // the int8 KV cache's rows (their per-row scales are applied by the caller)
  using T = int8_t;
  static __m256 load8(const int8_t* p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
  static float load1(const int8_t* p) { return float(*p); }
};

// MT rows of x against NT rows of w: MT*NT accumulators, each weight vector widened once and used
// MT times.
template <class L, int MT, int NT>
void tile(const float* x, int64_t K, const typename L::T* w, float* y, int64_t ldy) {
  __m256 acc[MT][NT];
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < NT; ++j) acc[i][j] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    // Decode streams each weight once: fetch the next tile's rows at this offset while this one
    // computes (the hardware prefetcher alone leaves most of the memory bandwidth unused).
    if (MT == 1 && ((k * int64_t(sizeof(typename L::T))) & 63) == 0)
      for (int j = 0; j < NT; ++j) _mm_prefetch(reinterpret_cast<const char*>(w + (j + NT) * K + k), _MM_HINT_T0);
    __m256 wv[NT];
    for (int j = 0; j < NT; ++j) wv[j] = L::load8(w + j * K + k);
    for (int i = 0; i < MT; ++i) {
      const __m256 xv = _mm256_loadu_ps(x + i * K + k);
      for (int j = 0; j < NT; ++j) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MT; ++i) {
    for (int j = 0; j < NT; ++j) {
      float s = hsum(acc[i][j]);
      for (int64_t kk = k; kk < K; ++kk) s += x[i * K + kk] * L::load1(w + j * K + kk);
      y[i * ldy + j] = s;
    }
  }
}

float dot_f32(const float* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  float s = hsum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

void axpy_f32(float a, const float* x, float* y, int64_t n) {
  const __m256 av = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * x[i];
}

void rmsnorm_f32(const float* x, const float* w, int64_t n, float eps, float* out,
                 bool accumulate) {
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    acc = _mm256_fmadd_ps(v, v, acc);
  }
  float ss = hsum(acc);
  for (; i < n; ++i) ss += x[i] * x[i];
  const float r = 1.0f / _mm_cvtss_f32(_mm_sqrt_ss(_mm_set_ss(ss / float(n) + eps)));
  const __m256 rv = _mm256_set1_ps(r);
  i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(w + i), _mm256_mul_ps(_mm256_loadu_ps(x + i), rv));
    if (accumulate) v = _mm256_add_ps(_mm256_loadu_ps(out + i), v);
    _mm256_storeu_ps(out + i, v);
  }
  for (; i < n; ++i) {
    const float v = w[i] * (x[i] * r);
    out[i] = accumulate ? out[i] + v : v;
  }
}

void silu_mul_f32(const float* gate, const float* up, int64_t n, float* out) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 zero = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 s = _mm256_div_ps(g, _mm256_add_ps(one, exp8(_mm256_sub_ps(zero, g))));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(s, _mm256_loadu_ps(up + i)));
  }
  for (; i < n; ++i) out[i] = gate[i] / (1.0f + exp1(-gate[i])) * up[i];
}

void rope_f32(float* x, const float* cos, const float* sin, int64_t half) {
  float* x2 = x + half;
  int64_t i = 0;
  for (; i + 8 <= half; i += 8) {
    const __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x2 + i);
    const __m256 c = _mm256_loadu_ps(cos + i), s = _mm256_loadu_ps(sin + i);
    _mm256_storeu_ps(x + i, _mm256_fmsub_ps(a, c, _mm256_mul_ps(b, s)));
    _mm256_storeu_ps(x2 + i, _mm256_fmadd_ps(b, c, _mm256_mul_ps(a, s)));
  }
  for (; i < half; ++i) {
    const float a = x[i], b = x2[i];
    x[i] = a * cos[i] - b * sin[i];
    x2[i] = b * cos[i] + a * sin[i];
  }
}

void softmax_f32(float* x, int64_t n) {
  float m = x[0];
  int64_t j = 0;
  if (n >= 8) {  // the same maximum as the scalar scan, 8 lanes at a time
    __m256 mx = _mm256_loadu_ps(x);
    for (j = 8; j + 8 <= n; j += 8) mx = _mm256_max_ps(_mm256_loadu_ps(x + j), mx);  // NaN keeps mx
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    m = _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
  }
  for (; j < n; ++j) m = x[j] > m ? x[j] : m;
  const __m256 mv = _mm256_set1_ps(m);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv));
    _mm256_storeu_ps(x + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  float sum = hsum(acc);
  for (; i < n; ++i) {
    x[i] = exp1(x[i] - m);
    sum += x[i];
  }
  const __m256 inv = _mm256_set1_ps(1.0f / sum);
  i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
  const float invs = 1.0f / sum;
  for (; i < n; ++i) x[i] *= invs;
}

// Weight rows per register tile on this ISA (kernels_simd.inc's tile_rows takes up to 4 activation rows).
constexpr int kRowsPerTile = 3;
#include "kernels_simd.inc"

// [Σ a0, Σ a1, ..., Σ a7]: eight horizontal sums in one transpose-add tree.
inline __m256 reduce8(const __m256* a) {
  const __m256 h01 = _mm256_hadd_ps(a[0], a[1]), h23 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 h45 = _mm256_hadd_ps(a[4], a[5]), h67 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 h0123 = _mm256_hadd_ps(h01, h23), h4567 = _mm256_hadd_ps(h45, h67);
  return _mm256_add_ps(_mm256_permute2f128_ps(h0123, h4567, 0x20),
                       _mm256_permute2f128_ps(h0123, h4567, 0x31));
}

// out[g, d0 .. d0 + 8V) for GN heads += Σ_{i in [i0, i1)} p[g, i] v_i, the accumulators in
// registers for the whole key loop (instead of a load-FMA-store of the output row per key). L
// loads the cache's elements (F32W, or F16W: widened as read).
template <class L, int GN, int V>
void attend_pv(const float* p, int64_t n, int64_t i0, int64_t i1, const typename L::T* v, int64_t stride,
               const int64_t* slots, int64_t d0, int64_t D, float* out) {
  __m256 acc[GN][V];
  for (int g = 0; g < GN; ++g)
    for (int u = 0; u < V; ++u) acc[g][u] = _mm256_loadu_ps(out + g * D + d0 + 8 * u);
  for (int64_t i = i0; i < i1; ++i) {
    const typename L::T* vr = v + slots[i] * stride + d0;
    __m256 vv[V];
    for (int u = 0; u < V; ++u) vv[u] = L::load8(vr + 8 * u);
    for (int g = 0; g < GN; ++g) {
      const __m256 pg = _mm256_broadcast_ss(p + g * n + i);
      for (int u = 0; u < V; ++u) acc[g][u] = _mm256_fmadd_ps(pg, vv[u], acc[g][u]);
    }
  }
  for (int g = 0; g < GN; ++g)
    for (int u = 0; u < V; ++u) _mm256_storeu_ps(out + g * D + d0 + 8 * u, acc[g][u]);
}

// Keys in blocks of 64 so the passes over 16-dim slices of a block's value rows after the first
// hit L1 (one pass per slice over all keys would fetch every row from memory in strided pieces).
template <class L, int GN>
void attend_pv_heads(const float* p, int64_t n, const typename L::T* v, int64_t stride,
                     const int64_t* slots, int64_t D, float* out) {
  for (int64_t j = 0; j < GN * D; j += 8)
    _mm256_storeu_ps(out + j, _mm256_setzero_ps());  // D % 8 == 0: rows of whole vectors
  const int64_t row_bytes = D * int64_t(sizeof(typename L::T));
  for (int64_t i0 = 0; i0 < n; i0 += 64) {
    const int64_t i1 = i0 + 64 < n ? i0 + 64 : n;
    for (int64_t i = i1; i < i1 + 64 && i < n; ++i) {  // the next block's rows, while this one runs
      const char* next = reinterpret_cast<const char*>(v + slots[i] * stride);
      for (int64_t l = 0; l < row_bytes; l += 64) _mm_prefetch(next + l, _MM_HINT_T0);
    }
    int64_t d = 0;
    for (; d + 16 <= D; d += 16) attend_pv<L, GN, 2>(p, n, i0, i1, v, stride, slots, d, D, out);
    if (d < D) attend_pv<L, GN, 1>(p, n, i0, i1, v, stride, slots, d, D, out);
  }
}

// scores[g * n + j] = scale * q_g . row_j for the 8 key rows of one block and every head g: 8
// accumulators over head_dim, reduced together.
template <class L>
void block_scores(const float* q, int64_t G, int64_t D, const typename L::T* const* rows, __m256 scale,
                  float* scores, int64_t n) {
  for (int64_t g = 0; g < G; ++g) {
    const float* qg = q + g * D;
    __m256 acc[8];
    for (int j = 0; j < 8; ++j) acc[j] = _mm256_setzero_ps();
    for (int64_t c = 0; c < D; c += 8) {
      const __m256 qc = _mm256_loadu_ps(qg + c);
      for (int j = 0; j < 8; ++j) acc[j] = _mm256_fmadd_ps(qc, L::load8(rows[j] + c), acc[j]);
    }
    _mm256_storeu_ps(scores + g * n, _mm256_mul_ps(reduce8(acc), scale));
  }
}

// The GQA attention of attend_f32 with every lane busy when head_dim is a multiple of 8 (callers
// check): scores of 8 keys at a time (8 accumulators over head_dim, reduced together), then the
// values weighted in registers, 16 dims of up to 4 heads per pass over the keys.
// ks / vs: the int8 cache's per-row scales (null for float rows): a score is multiplied by its key's
// scale before the softmax, a softmax weight by its value's scale after it.
template <class L>
void attend_avx2(const float* q, int64_t G, int64_t D, const typename L::T* k, const typename L::T* v,
                 int64_t stride, const int64_t* slots, int64_t n, float scale, float* scores, float* out,
                 const float* ks = nullptr, const float* vs = nullptr) {
  const __m256 sv = _mm256_set1_ps(scale);
  const int64_t row_bytes = D * int64_t(sizeof(typename L::T));
  // Blocks of 8 keys, outer, so a block's rows are read from memory once and stay in L1 for all G
  // heads; decode reads every row once, so the rows 32 keys ahead are fetched meanwhile (and the
  // block's value rows: see attend512).
  const int64_t ahead = 32;
  int64_t i = 0;
  // f16 rows are widened once per block into L1 scratch, not once per query head.
  constexpr bool widen = !std::is_same<typename L::T, float>::value;
  constexpr int64_t kMaxWidenDim = 256;
  alignas(32) float kw[widen ? 8 * kMaxWidenDim : 8];
  for (; i + 8 <= n; i += 8) {
    const typename L::T* kr[8];
    for (int j = 0; j < 8; ++j) kr[j] = k + slots[i + j] * stride;
    for (int64_t j = i; j < i + 8; ++j) {  // and this block's value rows, read once the scores are done
      const char* kn = j + ahead < n ? reinterpret_cast<const char*>(k + slots[j + ahead] * stride) : nullptr;
      const char* vn = reinterpret_cast<const char*>(v + slots[j] * stride);
      for (int64_t l = 0; l < row_bytes; l += 64) {
        if (kn) _mm_prefetch(kn + l, _MM_HINT_T0);
        _mm_prefetch(vn + l, _MM_HINT_T0);
      }
    }
    if (widen && D <= kMaxWidenDim) {
      const float* kf[8];
      for (int j = 0; j < 8; ++j) {
        for (int64_t c = 0; c < D; c += 8) _mm256_store_ps(kw + j * D + c, L::load8(kr[j] + c));
        kf[j] = kw + j * D;
      }
      block_scores<F32W>(q, G, D, kf, sv, scores + i, n);
    } else {
      block_scores<L>(q, G, D, kr, sv, scores + i, n);
    }
  }
  for (; i < n; ++i) {
    const typename L::T* key = k + slots[i] * stride;
    for (int64_t g = 0; g < G; ++g) {
      __m256 acc = _mm256_setzero_ps();
      for (int64_t c = 0; c < D; c += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + g * D + c), L::load8(key + c), acc);
      scores[g * n + i] = hsum(acc) * scale;
    }
  }
  softmax_scaled(scores, G, n, slots, ks, vs);
  for (int64_t g = 0; g < G; g += 4) {
    const float* p = scores + g * n;
    float* o = out + g * D;
    switch (G - g < 4 ? G - g : 4) {
      case 4: attend_pv_heads<L, 4>(p, n, v, stride, slots, D, o); break;
      case 3: attend_pv_heads<L, 3>(p, n, v, stride, slots, D, o); break;
      case 2: attend_pv_heads<L, 2>(p, n, v, stride, slots, D, o); break;
      default: attend_pv_heads<L, 1>(p, n, v, stride, slots, D, o); break;
    }
  }
}

void attend_f32_avx2(const float* q, int64_t G, int64_t D, const float* k, const float* v,
                     int64_t stride, const int64_t* slots, int64_t n, float scale, float* scores,
                     float* out) {
  if (D % 8 != 0) {
    attend_f32(q, G, D, k, v, stride, slots, n, scale, scores, out);
    return;
  }
  attend_avx2<F32W>(q, G, D, k, v, stride, slots, n, scale, scores, out);
}

// head_dim not a multiple of 8: the scalar reference (no EXAONE checkpoint has one).
void attend_f16_avx2(const float* q, int64_t G, int64_t D, const uint16_t* k, const uint16_t* v,
                     int64_t stride, const int64_t* slots, int64_t n, float scale, float* scores,
                     float* out) {
  if (D % 8 != 0) {
    scalar_table().attend_f16(q, G, D, k, v, stride, slots, n, scale, scores, out);
    return;
  }
  attend_avx2<F16W>(q, G, D, k, v, stride, slots, n, scale, scores, out);
}

void attend_i8_avx2(const float* q, int64_t G, int64_t D, const int8_t* k, const int8_t* v, const float* ks,
                    const float* vs, int64_t stride, const int64_t* slots, int64_t n, float scale, float* scores,
                    float* out) {
  if (D % 8 != 0) {
    scalar_table().attend_i8(q, G, D, k, v, ks, vs, stride, slots, n, scale, scores, out);
    return;
  }
  attend_avx2<I8W>(q, G, D, k, v, stride, slots, n, scale, scores, out, ks, vs);
}

// attend_rows.inc's vector: 8 lanes, 16 registers (a score tile of 4 keys x 3 row vectors, a value
// tile of 3 rows x 24 dims), masks as all-ones lanes.
struct Lanes {
  using R = __m256;
  static constexpr int N = 8, kKeyTile = 4, kRowVecTile = 3, kRowTile = 3, kDimVecTile = 3;
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, R x) { _mm256_storeu_ps(p, x); }
  static R zero() { return _mm256_setzero_ps(); }
  static R set1(float x) { return _mm256_set1_ps(x); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R sub(R a, R b) { return _mm256_sub_ps(a, b); }
  static R max(R a, R b) { return _mm256_max_ps(a, b); }
  static R exp(R x) { return exp8(x); }
  template <class L>
  static R widen(const typename L::T* p) { return L::load8(p); }
  static R neg_inf() { return _mm256_set1_ps(-std::numeric_limits<float>::infinity()); }
  static R mask_unseen(R x, int32_t kp, const int32_t* p, int32_t w) {
    const __m256i pv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), kv = _mm256_set1_epi32(kp);
    __m256i seen = _mm256_cmpgt_epi32(pv, _mm256_set1_epi32(kp - 1));  // p >= kp (kp >= 0)
    if (w) seen = _mm256_and_si256(seen, _mm256_cmpgt_epi32(_mm256_set1_epi32(w), _mm256_sub_epi32(pv, kv)));
    return _mm256_blendv_ps(neg_inf(), x, _mm256_castsi256_ps(seen));
  }
  static R exp_seen(R x, R mu) {
    return _mm256_and_ps(exp8(_mm256_sub_ps(x, mu)), _mm256_cmp_ps(x, neg_inf(), _CMP_NEQ_OQ));
  }
  static R shift_of(R m) { return _mm256_andnot_ps(_mm256_cmp_ps(m, neg_inf(), _CMP_EQ_OQ), m); }
  static bool any_greater(R a, R b) { return _mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_GT_OQ)) != 0; }
};
#include "attend_rows.inc"

void bf16_to_f32(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, BF16W::load8(src + i));
  for (; i < n; ++i) dst[i] = BF16W::load1(src + i);
}

void f16_to_f32(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, F16W::load8(src + i));
  for (; i < n; ++i) dst[i] = F16W::load1(src + i);
}

// F16C's conversion rounds to nearest even, as the scalar reference (f32 subnormals become +-0
// either way; MXCSR's flush bits do not touch a half result).
void f32_to_f16(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (; i < n; ++i) dst[i] = f32_to_f16_value(src[i]);
}

double exp_shifted_f32(const float* x, int64_t n, float shift, float scale, float* out) {
  const __m256 sv = _mm256_set1_ps(shift), kv = _mm256_set1_ps(scale), lo = _mm256_set1_ps(-87.0f);
  __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 z = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), sv), kv);
    const __m256 e = _mm256_and_ps(exp8(z), _mm256_cmp_ps(z, lo, _CMP_GE_OQ));
    _mm256_storeu_ps(out + i, e);
    acc0 = _mm256_add_pd(acc0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    acc1 = _mm256_add_pd(acc1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
  }
  double lanes[4];
  _mm256_storeu_pd(lanes, _mm256_add_pd(acc0, acc1));
  double sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
  for (; i < n; ++i) {
    const float z = (x[i] - shift) * scale;
    out[i] = z >= -87.0f ? exp1(z) : 0.0f;
    sum += double(out[i]);
  }
  return sum;
}

// float partial sums per 64 elements (8 vectors), then double; K thresholds kept in registers
template <int K>
void sums_at_least_k(const float* x, int64_t n, const float* thresholds, double* out) {
  __m256 t[K];
  double tot[K];
  for (int j = 0; j < K; ++j) t[j] = _mm256_set1_ps(thresholds[j]), tot[j] = 0.0;
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    __m256 acc[K];
    for (int j = 0; j < K; ++j) acc[j] = _mm256_setzero_ps();
    for (int v = 0; v < 8; ++v) {
      const __m256 xv = _mm256_loadu_ps(x + i + 8 * v);
      for (int j = 0; j < K; ++j)
        acc[j] = _mm256_add_ps(acc[j], _mm256_and_ps(xv, _mm256_cmp_ps(xv, t[j], _CMP_GE_OQ)));
    }
    for (int j = 0; j < K; ++j) {
      const __m256d d = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(acc[j])),
                                      _mm256_cvtps_pd(_mm256_extractf128_ps(acc[j], 1)));
      const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(d), _mm256_extractf128_pd(d, 1));
      tot[j] += _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
    }
  }
  for (; i < n; ++i)
    for (int j = 0; j < K; ++j)
      if (x[i] >= thresholds[j]) tot[j] += double(x[i]);
  for (int j = 0; j < K; ++j) out[j] = tot[j];
}

void sums_at_least_f32(const float* x, int64_t n, const float* thresholds, int64_t k, double* out) {
  switch (k) {
    case 1: return sums_at_least_k<1>(x, n, thresholds, out);
    case 2: return sums_at_least_k<2>(x, n, thresholds, out);
    case 3: return sums_at_least_k<3>(x, n, thresholds, out);
    case 4: return sums_at_least_k<4>(x, n, thresholds, out);
    case 5: return sums_at_least_k<5>(x, n, thresholds, out);
    case 6: return sums_at_least_k<6>(x, n, thresholds, out);
    case 7: return sums_at_least_k<7>(x, n, thresholds, out);
    default: return sums_at_least_k<8>(x, n, thresholds, out);
  }
}

float max_f32(const float* x, int64_t n, float* copy_to, bool* all_finite) {
  __m256 m0 = _mm256_set1_ps(-std::numeric_limits<float>::infinity()), m1 = m0;
  __m256 chk = _mm256_setzero_ps();  // sums x - x: 0 while every x is finite, NaN after a NaN or inf
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
    if (copy_to) _mm256_storeu_ps(copy_to + i, a), _mm256_storeu_ps(copy_to + i + 8, b);
    m0 = _mm256_max_ps(m0, a);
    m1 = _mm256_max_ps(m1, b);
    chk = _mm256_add_ps(chk, _mm256_add_ps(_mm256_sub_ps(a, a), _mm256_sub_ps(b, b)));
  }
  float lanes[8], checks[8];
  _mm256_storeu_ps(lanes, _mm256_max_ps(m0, m1));
  _mm256_storeu_ps(checks, chk);
  float m = lanes[0];
  bool finite = true;
  for (int j = 0; j < 8; ++j) m = lanes[j] > m ? lanes[j] : m, finite = finite && checks[j] == 0.0f;
  for (; i < n; ++i) {
    finite = finite && std::isfinite(x[i]);
    if (x[i] > m) m = x[i];
    if (copy_to) copy_to[i] = x[i];
  }
  *all_finite = finite;
  return m;
}

inline int lowest_bit(unsigned bits) {
#if defined(_MSC_VER)
  unsigned long j;
  _BitScanForward(&j, bits);
  return int(j);
#else
  return __builtin_ctz(bits);
#endif
}

int64_t find_in_range_f32(const float* x, int64_t n, float lo, float hi, int32_t* out) {
  const __m256 l = _mm256_set1_ps(lo), h = _mm256_set1_ps(hi);
  int64_t m = 0, i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    unsigned bits = unsigned(_mm256_movemask_ps(
        _mm256_and_ps(_mm256_cmp_ps(v, l, _CMP_GE_OQ), _mm256_cmp_ps(v, h, _CMP_LT_OQ))));
    while (bits) {  // most vectors hold none: one test each
      const int j = lowest_bit(bits);
      out[m++] = int32_t(i + j);
      bits &= bits - 1;
    }
  }
  for (; i < n; ++i)
    if (x[i] >= lo && x[i] < hi) out[m++] = int32_t(i);
  return m;
}

}  // namespace

const KernelTable* avx2_table() {
  static const KernelTable table = {
      "avx2",      matmul_f32,  matmul_bf16, matmul_f16,  dot_f32,     axpy_f32,
      rmsnorm_f32, silu_mul_f32, rope_f32,   softmax_f32, attend_f32_avx2, attend_f16_avx2, attend_i8_avx2,
      bf16_to_f32, f16_to_f32, f32_to_f16, exp_shifted_f32, sums_at_least_f32, max_f32, find_in_range_f32,
      attend_rows,
  };
  return &table;
}

}  // namespace kernels
}  // namespace exaone
