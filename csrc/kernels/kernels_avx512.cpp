// AVX-512 F variants of the float-weight matmuls (f32, bf16, f16 weights; 16 lanes, 32 registers
// for a 4-token x 6-row register tile) and of the GQA attention over f32 / f16 / int8 KV caches
// (decode's loop, and prefill's blocks through attend_rows.inc); every other entry of the table is AVX2's. This file alone
// is compiled with -mavx512f -mavx512bw -mavx512vl (plus the AVX2 flags) and its table is offered
// only when CPUID and XCR0 report AVX-512 F/BW/VL.
#include <immintrin.h>

#include <cstring>
#include <limits>

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

struct I8W {  // the int8 KV cache's rows (their per-row scales are applied by the caller)
  using T = int8_t;
  static __m512 load16(const int8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  static float load1(const int8_t* p) { return float(*p); }
};

// kernels_simd.inc's GQA attention loop needs these (the table takes AVX2's softmax).
float dot_f32(const float* a, const float* b, int64_t n) { return avx2_table()->dot_f32(a, b, n); }
void axpy_f32(float a, const float* x, float* y, int64_t n) { avx2_table()->axpy_f32(a, x, y, n); }
void softmax_f32(float* x, int64_t n) { avx2_table()->softmax_f32(x, n); }

constexpr int kRowsPerTile = 6;
#include "kernels_simd.inc"

// [Σ a0, ..., Σ a7]: each 16-lane sum folded to 8 lanes, then one transpose-add tree.
inline __m256 reduce8(const __m512* a) {
  __m256 h[8];
  for (int j = 0; j < 8; ++j)
    h[j] = _mm256_add_ps(_mm512_castps512_ps256(a[j]),
                         _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a[j]), 1)));
  const __m256 h01 = _mm256_hadd_ps(h[0], h[1]), h23 = _mm256_hadd_ps(h[2], h[3]);
  const __m256 h45 = _mm256_hadd_ps(h[4], h[5]), h67 = _mm256_hadd_ps(h[6], h[7]);
  const __m256 h0123 = _mm256_hadd_ps(h01, h23), h4567 = _mm256_hadd_ps(h45, h67);
  return _mm256_add_ps(_mm256_permute2f128_ps(h0123, h4567, 0x20), _mm256_permute2f128_ps(h0123, h4567, 0x31));
}

// out[g, d0 .. d0 + 16V) for GN heads += Σ_{i in [i0, i1)} p[g, i] v_i, accumulators in registers
// for the whole key range; each value vector is widened once for the GN heads.
template <class L, int GN, int V>
void attend_pv(const float* p, int64_t n, int64_t i0, int64_t i1, const typename L::T* v, int64_t stride,
               const int64_t* slots, int64_t d0, int64_t D, float* out) {
  __m512 acc[GN][V];
  for (int g = 0; g < GN; ++g)
    for (int u = 0; u < V; ++u) acc[g][u] = _mm512_loadu_ps(out + g * D + d0 + 16 * u);
  for (int64_t i = i0; i < i1; ++i) {
    const typename L::T* vr = v + slots[i] * stride + d0;
    __m512 vv[V];
    for (int u = 0; u < V; ++u) vv[u] = L::load16(vr + 16 * u);
    for (int g = 0; g < GN; ++g) {
      const __m512 pg = _mm512_set1_ps(p[g * n + i]);
      for (int u = 0; u < V; ++u) acc[g][u] = _mm512_fmadd_ps(pg, vv[u], acc[g][u]);
    }
  }
  for (int g = 0; g < GN; ++g)
    for (int u = 0; u < V; ++u) _mm512_storeu_ps(out + g * D + d0 + 16 * u, acc[g][u]);
}

template <class L, int GN>
void attend_pv_dims(const float* p, int64_t n, int64_t i0, int64_t i1, const typename L::T* v, int64_t stride,
                    const int64_t* slots, int64_t D, float* out) {
  int64_t d = 0;
  for (; d + 64 <= D; d += 64) attend_pv<L, GN, 4>(p, n, i0, i1, v, stride, slots, d, D, out);
  switch ((D - d) / 16) {
    case 3: attend_pv<L, GN, 3>(p, n, i0, i1, v, stride, slots, d, D, out); break;
    case 2: attend_pv<L, GN, 2>(p, n, i0, i1, v, stride, slots, d, D, out); break;
    case 1: attend_pv<L, GN, 1>(p, n, i0, i1, v, stride, slots, d, D, out); break;
    default: break;
  }
}

// The scores of up to 4 query heads q[GN, D] against 4 keys (rows kr[0..3], widened as they are
// loaded), times s (lanes: the 4 keys' scale, twice) into scores[h * n + 0..3]. Each key chunk is
// widened once for all GN heads and the 4 * GN dot products stay in registers; each score is
// summed in reduce8's tree whichever head pair it falls in.
template <class L, int GN>
inline void qk4(const float* q, int64_t D, const typename L::T* const* kr, __m256 s, float* scores, int64_t n) {
  __m512 acc[4 * GN];
  for (int j = 0; j < 4 * GN; ++j) acc[j] = _mm512_setzero_ps();
  for (int64_t c = 0; c < D; c += 16) {
    __m512 kv[4];
    for (int j = 0; j < 4; ++j) kv[j] = L::load16(kr[j] + c);
    for (int h = 0; h < GN; ++h) {
      const __m512 qc = _mm512_loadu_ps(q + h * D + c);
      for (int j = 0; j < 4; ++j) acc[4 * h + j] = _mm512_fmadd_ps(qc, kv[j], acc[4 * h + j]);
    }
  }
  for (int h = 0; h < GN; h += 2) {
    __m512 pair[8];
    for (int j = 0; j < 4; ++j) {
      pair[j] = acc[4 * h + j];
      pair[4 + j] = h + 1 < GN ? acc[4 * (h + 1) + j] : _mm512_setzero_ps();
    }
    const __m256 r = _mm256_mul_ps(reduce8(pair), s);
    _mm_storeu_ps(scores + h * n, _mm256_castps256_ps128(r));
    if (h + 1 < GN) _mm_storeu_ps(scores + (h + 1) * n, _mm256_extractf128_ps(r, 1));
  }
}

// AVX2's attention loop (kernels_avx2.cpp) at 16 lanes, for head_dim a multiple of 16 (up to 256;
// callers check): the scores of 4 keys at a time for up to 4 heads (qk4: 1.1x the speed of 8 keys
// widened into L1 scratch and scored head by head, in one process on Zen 4), then the values
// weighted in registers, 64 dims of up to 4 heads per pass over a block of 64 keys. ks / vs as in
// attend_avx2: the int8 cache's per-row scales, or null.
template <class L>
void attend512(const float* q, int64_t G, int64_t D, const typename L::T* k, const typename L::T* v,
               int64_t stride, const int64_t* slots, int64_t n, float scale, float* scores, float* out,
               const float* ks = nullptr, const float* vs = nullptr) {
  const int64_t row_bytes = D * int64_t(sizeof(typename L::T));
  const __m256 sv = _mm256_set1_ps(scale);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    // Decode reads each row once, from memory: the key rows 32 keys ahead are fetched meanwhile,
    // and so are this block's value rows, which the weighted sum reads once the scores are done
    // (fetched then, a block at a time, they cost 1.2x the attention's time: 40 caches of 580
    // positions, 8 KV heads, f16, 2 threads on Zen 4, in one process).
    for (int64_t j = i; j < i + 4; ++j) {
      const char* kn = j + 32 < n ? reinterpret_cast<const char*>(k + slots[j + 32] * stride) : nullptr;
      const char* vn = reinterpret_cast<const char*>(v + slots[j] * stride);
      for (int64_t l = 0; l < row_bytes; l += 64) {
        if (kn) _mm_prefetch(kn + l, _MM_HINT_T0);
        _mm_prefetch(vn + l, _MM_HINT_T0);
      }
    }
    const typename L::T* kr[4];
    for (int j = 0; j < 4; ++j) kr[j] = k + slots[i + j] * stride;
    __m256 s = sv;  // the scale, times each key's own for an int8 cache (applied here once per block)
    if (ks) {
      alignas(32) float kss[8];
      for (int j = 0; j < 4; ++j) kss[j] = kss[4 + j] = ks[slots[i + j]];
      s = _mm256_mul_ps(sv, _mm256_load_ps(kss));
    }
    for (int64_t g = 0; g < G; g += 4) {
      float* sg = scores + g * n + i;
      switch (G - g < 4 ? G - g : 4) {
        case 4: qk4<L, 4>(q + g * D, D, kr, s, sg, n); break;
        case 3: qk4<L, 3>(q + g * D, D, kr, s, sg, n); break;
        case 2: qk4<L, 2>(q + g * D, D, kr, s, sg, n); break;
        default: qk4<L, 1>(q + g * D, D, kr, s, sg, n); break;
      }
    }
  }
  for (; i < n; ++i) {
    const typename L::T* key = k + slots[i] * stride;
    for (int64_t g = 0; g < G; ++g) {
      __m512 acc = _mm512_setzero_ps();
      for (int64_t c = 0; c < D; c += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + g * D + c), L::load16(key + c), acc);
      scores[g * n + i] = _mm512_reduce_add_ps(acc) * (ks ? scale * ks[slots[i]] : scale);
    }
  }
  softmax_scaled(scores, G, n, slots, nullptr, vs);
  for (int64_t j = 0; j < G * D; j += 16) _mm512_storeu_ps(out + j, _mm512_setzero_ps());
  for (int64_t i0 = 0; i0 < n; i0 += 64) {
    const int64_t i1 = i0 + 64 < n ? i0 + 64 : n;
    for (int64_t g = 0; g < G; g += 4) {
      const float* p = scores + g * n;
      float* o = out + g * D;
      switch (G - g < 4 ? G - g : 4) {
        case 4: attend_pv_dims<L, 4>(p, n, i0, i1, v, stride, slots, D, o); break;
        case 3: attend_pv_dims<L, 3>(p, n, i0, i1, v, stride, slots, D, o); break;
        case 2: attend_pv_dims<L, 2>(p, n, i0, i1, v, stride, slots, D, o); break;
        default: attend_pv_dims<L, 1>(p, n, i0, i1, v, stride, slots, D, o); break;
      }
    }
  }
}

bool attend512_fits(int64_t D) { return D % 16 == 0 && D <= 256; }

void attend_f32_512(const float* q, int64_t G, int64_t D, const float* k, const float* v, int64_t stride,
                    const int64_t* slots, int64_t n, float scale, float* scores, float* out) {
  if (!attend512_fits(D)) return avx2_table()->attend_f32(q, G, D, k, v, stride, slots, n, scale, scores, out);
  attend512<F32W>(q, G, D, k, v, stride, slots, n, scale, scores, out);
}
void attend_f16_512(const float* q, int64_t G, int64_t D, const uint16_t* k, const uint16_t* v, int64_t stride,
                    const int64_t* slots, int64_t n, float scale, float* scores, float* out) {
  if (!attend512_fits(D)) return avx2_table()->attend_f16(q, G, D, k, v, stride, slots, n, scale, scores, out);
  attend512<F16W>(q, G, D, k, v, stride, slots, n, scale, scores, out);
}
void attend_i8_512(const float* q, int64_t G, int64_t D, const int8_t* k, const int8_t* v, const float* ks,
                   const float* vs, int64_t stride, const int64_t* slots, int64_t n, float scale, float* scores,
                   float* out) {
  if (!attend512_fits(D))
    return avx2_table()->attend_i8(q, G, D, k, v, ks, vs, stride, slots, n, scale, scores, out);
  attend512<I8W>(q, G, D, k, v, stride, slots, n, scale, scores, out, ks, vs);
}

// exp for 16 lanes: exp8's Cody-Waite reduction and degree-6 polynomial (kernels_avx2.cpp).
inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(x, _mm512_set1_ps(88.0f));  // keeps 2^n finite
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

// attend_rows.inc's vector: 16 lanes, 32 registers (a score tile of 4 keys x 4 row vectors, a value
// tile of 4 rows x 64 dims), masks in k registers.
struct Lanes {
  using R = __m512;
  static constexpr int N = 16, kKeyTile = 4, kRowVecTile = 4, kRowTile = 4, kDimVecTile = 4;
  static R load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, R x) { _mm512_storeu_ps(p, x); }
  static R zero() { return _mm512_setzero_ps(); }
  static R set1(float x) { return _mm512_set1_ps(x); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R sub(R a, R b) { return _mm512_sub_ps(a, b); }
  static R max(R a, R b) { return _mm512_max_ps(a, b); }
  static R exp(R x) { return exp16(x); }
  template <class L>
  static R widen(const typename L::T* p) { return L::load16(p); }
  static R neg_inf() { return _mm512_set1_ps(-std::numeric_limits<float>::infinity()); }
  static R mask_unseen(R x, int32_t kp, const int32_t* p, int32_t w) {
    const __m512i pv = _mm512_loadu_si512(p), kv = _mm512_set1_epi32(kp);
    __mmask16 seen = _mm512_cmp_epi32_mask(kv, pv, _MM_CMPINT_LE);
    if (w) seen &= _mm512_cmp_epi32_mask(_mm512_sub_epi32(pv, kv), _mm512_set1_epi32(w), _MM_CMPINT_LT);
    return _mm512_mask_blend_ps(seen, neg_inf(), x);
  }
  static R exp_seen(R x, R mu) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, neg_inf(), _CMP_NEQ_OQ), exp16(_mm512_sub_ps(x, mu)));
  }
  static R shift_of(R m) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(m, neg_inf(), _CMP_EQ_OQ), m, zero()); }
  static bool any_greater(R a, R b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ) != 0; }
};
#include "attend_rows.inc"

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
    const int64_t m = k - j < 8 ? k - j : 8;
    if (m == 8) sums_at_least_k<8>(x, n, thresholds + j, out + j);
    else for (int64_t q = 0; q < m; ++q) sums_at_least_k<1>(x, n, thresholds + j + q, out + j + q);
  }
}


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
    t.attend_f32 = attend_f32_512;
    t.attend_f16 = attend_f16_512;
    t.attend_i8 = attend_i8_512;
    t.attend_rows = attend_rows;
    return t;
  }();
  return &table;
}

}  // namespace kernels
}  // namespace exaone
