// NEON variants of the kernel table for aarch64 (NEON is part of the ARMv8-A baseline, so this file
// needs no extra flags; fp16 conversion is baseline too), prefill attention included (attend_rows.inc).
// Internal linkage throughout, as in the AVX2
// file.
#include <arm_neon.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "kernels.h"

namespace exaone {
namespace kernels {
namespace {

inline float hsum(float32x4_t v) { return vaddvq_f32(v); }

// exp(x) for 4 lanes: the same reduction and polynomial as the AVX2 path.
inline float32x4_t exp4(float32x4_t x) {
  x = vminq_f32(x, vdupq_n_f32(88.0f));
  x = vmaxq_f32(x, vdupq_n_f32(-87.0f));
  const float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
  float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
  r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
  float32x4_t p = vdupq_n_f32(1.9875691500e-4f);
  p = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), p, r);
  p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p, r);
  p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
  p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
  p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), p, vmulq_f32(r, r));
  const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
  return vmulq_f32(p, vreinterpretq_f32_s32(e));
}

inline float exp1(float x) { return vgetq_lane_f32(exp4(vdupq_n_f32(x)), 0); }

struct F32W {
  using T = float;
  static float32x4_t load4(const float* p) { return vld1q_f32(p); }
  static float load1(const float* p) { return *p; }
};
struct BF16W {
  using T = uint16_t;
  static float32x4_t load4(const uint16_t* p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }
  static float load1(const uint16_t* p) {
    const uint32_t bits = uint32_t(*p) << 16;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  }
};
struct F16W {
  using T = uint16_t;
  static float32x4_t load4(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
  static float load1(const uint16_t* p) {
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vld1_dup_u16(p))), 0);
  }
};

template <class L, int MT, int NT>
void tile(const float* x, int64_t K, const typename L::T* w, float* y, int64_t ldy) {
  float32x4_t acc[MT][NT];
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < NT; ++j) acc[i][j] = vdupq_n_f32(0.0f);
  int64_t k = 0;
  for (; k + 4 <= K; k += 4) {
    float32x4_t wv[NT];
    for (int j = 0; j < NT; ++j) wv[j] = L::load4(w + j * K + k);
    for (int i = 0; i < MT; ++i) {
      const float32x4_t xv = vld1q_f32(x + i * K + k);
      for (int j = 0; j < NT; ++j) acc[i][j] = vfmaq_f32(acc[i][j], xv, wv[j]);
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
  float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    acc0 = vfmaq_f32(acc0, vld1q_f32(a + i), vld1q_f32(b + i));
    acc1 = vfmaq_f32(acc1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
  }
  for (; i + 4 <= n; i += 4) acc0 = vfmaq_f32(acc0, vld1q_f32(a + i), vld1q_f32(b + i));
  float s = hsum(vaddq_f32(acc0, acc1));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

void axpy_f32(float a, const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), vld1q_f32(x + i), a));
  for (; i < n; ++i) y[i] += a * x[i];
}

void rmsnorm_f32(const float* x, const float* w, int64_t n, float eps, float* out,
                 bool accumulate) {
  float32x4_t acc = vdupq_n_f32(0.0f);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float32x4_t v = vld1q_f32(x + i);
    acc = vfmaq_f32(acc, v, v);
  }
  float ss = hsum(acc);
  for (; i < n; ++i) ss += x[i] * x[i];
  const float r = 1.0f / vgetq_lane_f32(vsqrtq_f32(vdupq_n_f32(ss / float(n) + eps)), 0);
  i = 0;
  for (; i + 4 <= n; i += 4) {
    float32x4_t v = vmulq_f32(vld1q_f32(w + i), vmulq_n_f32(vld1q_f32(x + i), r));
    if (accumulate) v = vaddq_f32(vld1q_f32(out + i), v);
    vst1q_f32(out + i, v);
  }
  for (; i < n; ++i) {
    const float v = w[i] * (x[i] * r);
    out[i] = accumulate ? out[i] + v : v;
  }
}

void silu_mul_f32(const float* gate, const float* up, int64_t n, float* out) {
  const float32x4_t one = vdupq_n_f32(1.0f);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float32x4_t g = vld1q_f32(gate + i);
    const float32x4_t s = vdivq_f32(g, vaddq_f32(one, exp4(vnegq_f32(g))));
    vst1q_f32(out + i, vmulq_f32(s, vld1q_f32(up + i)));
  }
  for (; i < n; ++i) out[i] = gate[i] / (1.0f + exp1(-gate[i])) * up[i];
}

void rope_f32(float* x, const float* cos, const float* sin, int64_t half) {
  float* x2 = x + half;
  int64_t i = 0;
  for (; i + 4 <= half; i += 4) {
    const float32x4_t a = vld1q_f32(x + i), b = vld1q_f32(x2 + i);
    const float32x4_t c = vld1q_f32(cos + i), s = vld1q_f32(sin + i);
    vst1q_f32(x + i, vfmsq_f32(vmulq_f32(a, c), b, s));
    vst1q_f32(x2 + i, vfmaq_f32(vmulq_f32(b, c), a, s));
  }
  for (; i < half; ++i) {
    const float a = x[i], b = x2[i];
    x[i] = a * cos[i] - b * sin[i];
    x2[i] = b * cos[i] + a * sin[i];
  }
}

void softmax_f32(float* x, int64_t n) {
  float m = x[0];
  for (int64_t i = 1; i < n; ++i) m = x[i] > m ? x[i] : m;
  const float32x4_t mv = vdupq_n_f32(m);
  float32x4_t acc = vdupq_n_f32(0.0f);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float32x4_t e = exp4(vsubq_f32(vld1q_f32(x + i), mv));
    vst1q_f32(x + i, e);
    acc = vaddq_f32(acc, e);
  }
  float sum = hsum(acc);
  for (; i < n; ++i) {
    x[i] = exp1(x[i] - m);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(x + i, vmulq_n_f32(vld1q_f32(x + i), inv));
  for (; i < n; ++i) x[i] *= inv;
}

// Weight rows per register tile on this ISA (kernels_simd.inc's tile_rows takes up to 4 activation rows).
constexpr int kRowsPerTile = 4;
#include "kernels_simd.inc"

struct I8W {  // the int8 KV cache's rows (their per-row scales are applied by attend_rows)
  using T = int8_t;
  static float32x4_t load4(const int8_t* p) {
    int32_t w;
    std::memcpy(&w, p, sizeof w);
    return vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(w))))));
  }
};

// attend_rows.inc's vector: 4 lanes, 32 registers (a score tile of 4 keys x 4 row vectors, a value
// tile of 4 rows x 16 dims), masks as all-ones lanes.
struct Lanes {
  using R = float32x4_t;
  static constexpr int N = 4, kKeyTile = 4, kRowVecTile = 4, kRowTile = 4, kDimVecTile = 4;
  static R load(const float* p) { return vld1q_f32(p); }
  static void store(float* p, R x) { vst1q_f32(p, x); }
  static R zero() { return vdupq_n_f32(0.0f); }
  static R set1(float x) { return vdupq_n_f32(x); }
  static R fma(R a, R b, R c) { return vfmaq_f32(c, a, b); }
  static R mul(R a, R b) { return vmulq_f32(a, b); }
  static R add(R a, R b) { return vaddq_f32(a, b); }
  static R sub(R a, R b) { return vsubq_f32(a, b); }
  static R max(R a, R b) { return vmaxq_f32(a, b); }
  static R exp(R x) { return exp4(x); }
  template <class L>
  static R widen(const typename L::T* p) { return L::load4(p); }
  static R neg_inf() { return vdupq_n_f32(-std::numeric_limits<float>::infinity()); }
  static R mask_unseen(R x, int32_t kp, const int32_t* p, int32_t w) {
    const int32x4_t pv = vld1q_s32(p), kv = vdupq_n_s32(kp);
    uint32x4_t seen = vcgeq_s32(pv, kv);
    if (w) seen = vandq_u32(seen, vcltq_s32(vsubq_s32(pv, kv), vdupq_n_s32(w)));
    return vbslq_f32(seen, x, neg_inf());
  }
  static R exp_seen(R x, R mu) {
    const uint32x4_t live = vmvnq_u32(vceqq_f32(x, neg_inf()));
    return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(exp4(vsubq_f32(x, mu))), live));
  }
  static R shift_of(R m) { return vbslq_f32(vceqq_f32(m, neg_inf()), zero(), m); }
  static bool any_greater(R a, R b) { return vmaxvq_u32(vcgtq_f32(a, b)) != 0; }
};
#include "attend_rows.inc"

void bf16_to_f32(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, BF16W::load4(src + i));
  for (; i < n; ++i) dst[i] = BF16W::load1(src + i);
}

void f16_to_f32(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, F16W::load4(src + i));
  for (; i < n; ++i) dst[i] = F16W::load1(src + i);
}

// FCVTN rounds by FPCR: to nearest even unless a caller changed the mode (the scalar reference's rounding).
void f32_to_f16(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1_u16(dst + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(src + i))));
  for (; i < n; ++i) dst[i] = f32_to_f16_value(src[i]);
}

double exp_shifted_f32(const float* x, int64_t n, float shift, float scale, float* out) {
  const float32x4_t sv = vdupq_n_f32(shift), kv = vdupq_n_f32(scale), lo = vdupq_n_f32(-87.0f);
  float64x2_t acc0 = vdupq_n_f64(0.0), acc1 = vdupq_n_f64(0.0);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float32x4_t z = vmulq_f32(vsubq_f32(vld1q_f32(x + i), sv), kv);
    const float32x4_t e = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(exp4(z)), vcgeq_f32(z, lo)));
    vst1q_f32(out + i, e);
    acc0 = vaddq_f64(acc0, vcvt_f64_f32(vget_low_f32(e)));
    acc1 = vaddq_f64(acc1, vcvt_high_f64_f32(e));
  }
  double sum = vaddvq_f64(vaddq_f64(acc0, acc1));
  for (; i < n; ++i) {
    const float z = (x[i] - shift) * scale;
    out[i] = z >= -87.0f ? exp1(z) : 0.0f;
    sum += double(out[i]);
  }
  return sum;
}

void sums_at_least_f32(const float* x, int64_t n, const float* thresholds, int64_t k, double* out) {
  // float partial sums per 32 elements (8 vectors), then double, 8 thresholds per pass
  float32x4_t t[8];
  double tot[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t j = 0; j < k; ++j) t[j] = vdupq_n_f32(thresholds[j]);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    float32x4_t acc[8];
    for (int64_t j = 0; j < k; ++j) acc[j] = vdupq_n_f32(0.0f);
    for (int v = 0; v < 8; ++v) {
      const float32x4_t xv = vld1q_f32(x + i + 4 * v);
      for (int64_t j = 0; j < k; ++j)
        acc[j] = vaddq_f32(acc[j], vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(xv), vcgeq_f32(xv, t[j]))));
    }
    for (int64_t j = 0; j < k; ++j)
      tot[j] += vaddvq_f64(vaddq_f64(vcvt_f64_f32(vget_low_f32(acc[j])), vcvt_high_f64_f32(acc[j])));
  }
  for (; i < n; ++i)
    for (int64_t j = 0; j < k; ++j)
      if (x[i] >= thresholds[j]) tot[j] += double(x[i]);
  for (int64_t j = 0; j < k; ++j) out[j] = tot[j];
}

float max_f32(const float* x, int64_t n, float* copy_to, bool* all_finite) {
  float32x4_t m0 = vdupq_n_f32(-std::numeric_limits<float>::infinity()), m1 = m0;
  float32x4_t chk = vdupq_n_f32(0.0f);  // sums x - x: 0 while every x is finite, NaN after a NaN or inf
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const float32x4_t a = vld1q_f32(x + i), b = vld1q_f32(x + i + 4);
    if (copy_to) vst1q_f32(copy_to + i, a), vst1q_f32(copy_to + i + 4, b);
    m0 = vmaxq_f32(m0, a);
    m1 = vmaxq_f32(m1, b);
    chk = vaddq_f32(chk, vaddq_f32(vsubq_f32(a, a), vsubq_f32(b, b)));
  }
  float m = vmaxvq_f32(vmaxq_f32(m0, m1));  // NaN if a NaN was seen: caught by the check anyway
  bool finite = vmaxvq_f32(vabsq_f32(chk)) == 0.0f && !std::isnan(vaddvq_f32(chk));
  for (; i < n; ++i) {
    finite = finite && std::isfinite(x[i]);
    if (x[i] > m) m = x[i];
    if (copy_to) copy_to[i] = x[i];
  }
  *all_finite = finite;
  return m;
}

int64_t find_in_range_f32(const float* x, int64_t n, float lo, float hi, int32_t* out) {
  const float32x4_t l = vdupq_n_f32(lo), h = vdupq_n_f32(hi);
  int64_t m = 0, i = 0;
  for (; i + 4 <= n; i += 4) {
    const float32x4_t v = vld1q_f32(x + i);
    const uint32x4_t in = vandq_u32(vcgeq_f32(v, l), vcltq_f32(v, h));
    if (vmaxvq_u32(in) == 0) continue;  // most vectors hold none: one test each
    for (int j = 0; j < 4; ++j)
      if (x[i + j] >= lo && x[i + j] < hi) out[m++] = int32_t(i + j);
  }
  for (; i < n; ++i)
    if (x[i] >= lo && x[i] < hi) out[m++] = int32_t(i);
  return m;
}

}  // namespace

const KernelTable* neon_table() {
  static const KernelTable table = {
      "neon",      matmul_f32,  matmul_bf16, matmul_f16,  dot_f32,     axpy_f32,
      rmsnorm_f32, silu_mul_f32, rope_f32,   softmax_f32, attend_f32,
      nullptr,  // attend_f16: the f16 cache is widened into scratch for attend_f32
      nullptr,  // attend_i8: likewise, each row times its scale
      bf16_to_f32, f16_to_f32, f32_to_f16, exp_shifted_f32, sums_at_least_f32, max_f32, find_in_range_f32,
      attend_rows,
  };
  return &table;
}

}  // namespace kernels
}  // namespace exaone
