// Scalar reference kernels: the fallback on any CPU and the oracle the SIMD variants are tested
// against. Plain loops in the order the math is written.
#include <cmath>
#include <limits>
#include <cstring>
#include <vector>

#include "kernels.h"

namespace exaone {
namespace kernels {

float f16_to_f32_value(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {
    uint32_t e = 113;
    while (!(mant & 0x400u)) {
      mant <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mant & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

uint16_t f32_to_f16_value(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u);  // inf / nan
  if (ax >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds past the largest half
  if (ax < 0x38800000u) {                         // below 2^-14: a subnormal half (or zero)
    float af;
    std::memcpy(&af, &ax, sizeof af);
    return sign | uint16_t(std::nearbyint(af * 16777216.0f));  // 1024 encodes 2^-14 correctly
  }
  uint32_t h = (((ax >> 23) - 112u) << 10) | ((ax & 0x7fffffu) >> 13);
  const uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // carries into the exponent correctly
  return sign | uint16_t(h);
}

namespace {

float bf16_value(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

template <class W, float (*Load)(W)>
void matmul_ref(const float* x, int64_t T, int64_t K, const W* w, int64_t n0, int64_t n1, float* y,
                int64_t ldy) {
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t n = n0; n < n1; ++n) {
      float acc = 0.0f;
      for (int64_t k = 0; k < K; ++k) acc += x[t * K + k] * Load(w[n * K + k]);
      y[t * ldy + n] = acc;
    }
  }
}

float f32_value(float v) { return v; }

void matmul_f32(const float* x, int64_t T, int64_t K, const float* w, int64_t n0, int64_t n1,
                float* y, int64_t ldy) {
  matmul_ref<float, f32_value>(x, T, K, w, n0, n1, y, ldy);
}
void matmul_bf16(const float* x, int64_t T, int64_t K, const uint16_t* w, int64_t n0, int64_t n1,
                 float* y, int64_t ldy) {
  matmul_ref<uint16_t, bf16_value>(x, T, K, w, n0, n1, y, ldy);
}
void matmul_f16(const float* x, int64_t T, int64_t K, const uint16_t* w, int64_t n0, int64_t n1,
                float* y, int64_t ldy) {
  matmul_ref<uint16_t, f16_to_f32_value>(x, T, K, w, n0, n1, y, ldy);
}

float dot_f32(const float* a, const float* b, int64_t n) {
  float acc = 0.0f;
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

void axpy_f32(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void rmsnorm_f32(const float* x, const float* w, int64_t n, float eps, float* out,
                 bool accumulate) {
  float ss = 0.0f;
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const float r = 1.0f / std::sqrt(ss / float(n) + eps);
  for (int64_t i = 0; i < n; ++i) {
    const float v = w[i] * (x[i] * r);
    out[i] = accumulate ? out[i] + v : v;
  }
}

void silu_mul_f32(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void rope_f32(float* x, const float* cos, const float* sin, int64_t half) {
  for (int64_t i = 0; i < half; ++i) {
    const float a = x[i], b = x[i + half];
    x[i] = a * cos[i] - b * sin[i];
    x[i + half] = b * cos[i] + a * sin[i];
  }
}

void softmax_f32(float* x, int64_t n) {
  float m = x[0];
  for (int64_t i = 1; i < n; ++i) m = x[i] > m ? x[i] : m;
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - m);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

double exp_shifted_f32(const float* x, int64_t n, float shift, float scale, float* out) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const float z = (x[i] - shift) * scale;
    out[i] = z >= -87.0f ? std::exp(z) : 0.0f;
    sum += double(out[i]);
  }
  return sum;
}

void sums_at_least_f32(const float* x, int64_t n, const float* thresholds, int64_t k, double* out) {
  for (int64_t j = 0; j < k; ++j) out[j] = 0.0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j) out[j] += x[i] >= thresholds[j] ? double(x[i]) : 0.0;
}

float max_f32(const float* x, int64_t n, float* copy_to, bool* all_finite) {
  float m = -std::numeric_limits<float>::infinity();
  bool finite = true;
  for (int64_t i = 0; i < n; ++i) {
    finite = finite && std::isfinite(x[i]);
    if (x[i] > m) m = x[i];
    if (copy_to) copy_to[i] = x[i];
  }
  *all_finite = finite;
  return m;
}

int64_t find_in_range_f32(const float* x, int64_t n, float lo, float hi, int32_t* out) {
  int64_t m = 0;
  for (int64_t i = 0; i < n; ++i)
    if (x[i] >= lo && x[i] < hi) out[m++] = int32_t(i);
  return m;
}

void attend_f32(const float* q, int64_t G, int64_t D, const float* k, const float* v,
                int64_t stride, const int64_t* slots, int64_t n, float scale, float* scores,
                float* out) {
  for (int64_t g = 0; g < G; ++g) {
    float* s = scores + g * n;
    for (int64_t i = 0; i < n; ++i) s[i] = dot_f32(q + g * D, k + slots[i] * stride, D) * scale;
    softmax_f32(s, n);
    float* o = out + g * D;
    for (int64_t d = 0; d < D; ++d) o[d] = 0.0f;
    for (int64_t i = 0; i < n; ++i) axpy_f32(s[i], v + slots[i] * stride, o, D);
  }
}

// attend_f32 with every K/V element widened exactly as read: the same sums in the same order.
void attend_f16(const float* q, int64_t G, int64_t D, const uint16_t* k, const uint16_t* v,
                int64_t stride, const int64_t* slots, int64_t n, float scale, float* scores,
                float* out) {
  for (int64_t g = 0; g < G; ++g) {
    float* s = scores + g * n;
    const float* qg = q + g * D;
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t* key = k + slots[i] * stride;
      float acc = 0.0f;
      for (int64_t d = 0; d < D; ++d) acc += qg[d] * f16_to_f32_value(key[d]);
      s[i] = acc * scale;
    }
    softmax_f32(s, n);
    float* o = out + g * D;
    for (int64_t d = 0; d < D; ++d) o[d] = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t* value = v + slots[i] * stride;
      for (int64_t d = 0; d < D; ++d) o[d] += s[i] * f16_to_f32_value(value[d]);
    }
  }
}

// The int8 cache's reference: score i = (q . k_i) * ks_i * scale, and value i weighted by
// p_i * vs_i, each int8 element widened exactly as read.
void attend_i8(const float* q, int64_t G, int64_t D, const int8_t* k, const int8_t* v, const float* ks,
               const float* vs, int64_t stride, const int64_t* slots, int64_t n, float scale, float* scores,
               float* out) {
  for (int64_t g = 0; g < G; ++g) {
    float* s = scores + g * n;
    const float* qg = q + g * D;
    for (int64_t i = 0; i < n; ++i) {
      const int8_t* key = k + slots[i] * stride;
      float acc = 0.0f;
      for (int64_t d = 0; d < D; ++d) acc += qg[d] * float(key[d]);
      s[i] = acc * ks[slots[i]] * scale;
    }
    softmax_f32(s, n);
    float* o = out + g * D;
    for (int64_t d = 0; d < D; ++d) o[d] = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
      const int8_t* value = v + slots[i] * stride;
      const float w = s[i] * vs[slots[i]];
      for (int64_t d = 0; d < D; ++d) o[d] += w * float(value[d]);
    }
  }
}

// Token by token: the keys token t sees, then attend_* over them for its G heads.
bool attend_rows(KVElem kv, const float* q, int64_t T, int64_t G, int64_t ld, int64_t D, const int64_t* qpos,
                 const void* k, const void* v, const float* ks, const float* vs, int64_t stride,
                 const int64_t* slots, const int64_t* kpos, int64_t n, int64_t window, float scale, float* out) {
  std::vector<int64_t> seen;
  std::vector<float> scores;
  for (int64_t t = 0; t < T; ++t) {
    seen.clear();
    for (int64_t i = 0; i < n; ++i)
      if (kpos[i] <= qpos[t] && (window <= 0 || qpos[t] - kpos[i] < window)) seen.push_back(slots[i]);
    const int64_t m = int64_t(seen.size());
    float* o = out + t * ld;
    if (m == 0) {
      for (int64_t j = 0; j < G * D; ++j) o[j] = 0.0f;
      continue;
    }
    scores.resize(size_t(G * m));
    const float* qt = q + t * ld;
    if (kv == KVElem::F32)
      attend_f32(qt, G, D, static_cast<const float*>(k), static_cast<const float*>(v), stride, seen.data(), m,
                 scale, scores.data(), o);
    else if (kv == KVElem::F16)
      attend_f16(qt, G, D, static_cast<const uint16_t*>(k), static_cast<const uint16_t*>(v), stride, seen.data(),
                 m, scale, scores.data(), o);
    else
      attend_i8(qt, G, D, static_cast<const int8_t*>(k), static_cast<const int8_t*>(v), ks, vs, stride,
                seen.data(), m, scale, scores.data(), o);
  }
  return true;
}

void bf16_to_f32(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_value(src[i]);
}

void f16_to_f32(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32_value(src[i]);
}

void f32_to_f16(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_f16_value(src[i]);
}

}  // namespace

const KernelTable& scalar_table() {
  static const KernelTable table = {
      "scalar",    matmul_f32,   matmul_bf16, matmul_f16,  dot_f32,    axpy_f32,
      rmsnorm_f32, silu_mul_f32, rope_f32,    softmax_f32, attend_f32, attend_f16, attend_i8,
      bf16_to_f32, f16_to_f32,  f32_to_f16, exp_shifted_f32, sums_at_least_f32, max_f32, find_in_range_f32,
      attend_rows,
  };
  return table;
}

}  // namespace kernels
}  // namespace exaone
