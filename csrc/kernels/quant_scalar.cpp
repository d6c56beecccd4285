// Scalar reference for the quantized formats of quant.h: the activation quantizer, the integer
// dot-product matmuls, row dequantization, and the weight quantizer with its squared-error scale
// search. Plain loops in the order the math is written; the oracle the AVX2 variants are tested
// against and the fallback on any CPU.
#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "quant.h"

namespace exaone {
namespace kernels {

namespace {

// Round to nearest even for |v| < 2^22, the same result as cvtps2dq under the default rounding
// mode (and vectorisable, unlike nearbyint on baseline x86-64).
inline float round_ne(float v) { return (v + 12582912.0f) - 12582912.0f; }

// ---- activations ------------------------------------------------------------------------------

void quantize_a8(const float* x, int64_t K, BlockA8* out) {
  for (int64_t b = 0; b < K / kQBlock; ++b) {
    const float* xb = x + b * kQBlock;
    float amax = 0.0f;
    for (int i = 0; i < kQBlock; ++i) amax = std::fabs(xb[i]) > amax ? std::fabs(xb[i]) : amax;
    BlockA8& o = out[b];
    const bool zero = !(amax >= 1e-30f);  // tiny or NaN block: all zeros, no 1/0
    o.d = zero ? 0.0f : amax / 127.0f;
    const float id = zero ? 0.0f : 1.0f / o.d;
    int32_t sum = 0;
    for (int i = 0; i < kQBlock; ++i) {
      const int q = int(round_ne(xb[i] * id));
      o.qs[i] = int8_t(q);
      sum += q;
      if (i == kQBlock / 2 - 1) o.sum_lo = sum;
    }
    o.sum = sum;
    o.dsum = o.d * float(sum);
  }
}

// ---- matmuls ------------------------------------------------------------------------------------

// Integer weight k of row n as the matmul multiplies it: the code, or u - 8 for Q4G.
template <QuantFormat F>
inline int weight_int(const QuantWeight& w, int64_t n, int64_t k) {
  const int c = weight_code(w, n, k);
  return F == QuantFormat::Q4G ? c - 8 : c;
}

// Scale and added min of group g of row n: f16 arrays, or the K formats' two-level scales (whose
// min is subtracted).
template <QuantFormat F>
inline float scale_of(const QuantWeight& w, int64_t n, int64_t g) {
  if constexpr (traits(F).k_scales) return kscale_value(w, n, g);
  return f16_to_f32_value(w.scales[scale_index(w, n, g)]);
}
template <QuantFormat F>
inline float min_of(const QuantWeight& w, int64_t n, int64_t g) {
  if constexpr (!traits(F).has_min) return 0.0f;
  if constexpr (traits(F).k_scales) return -kmin_value(w, n, g);
  return f16_to_f32_value(w.mins[scale_index(w, n, g)]);
}

// acc = Σ_g isum_g * (s_g * d_b) [+ m_g * (d_b * sum_g)], over the groups of each 32-value block in
// order (one group per block, or two of 16 for G 16 (Q8K, Q6K); a group of 64 or 128 spans blocks).
template <QuantFormat F>
void matmul_ref(const BlockA8* xq, int64_t T, const QuantWeight& w, int64_t n0, int64_t n1, float* y,
                int64_t ldy) {
  const int64_t nb = w.blocks();
  const int64_t span = w.group < kQBlock ? w.group : kQBlock;  // values summed per scale step
  for (int64_t t = 0; t < T; ++t) {
    const BlockA8* xb = xq + t * nb;
    for (int64_t n = n0; n < n1; ++n) {
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        for (int64_t k0 = b * kQBlock; k0 < (b + 1) * kQBlock; k0 += span) {
          const int64_t g = k0 / w.group;
          int32_t isum = 0, xsum = 0;
          for (int64_t k = k0; k < k0 + span; ++k) {
            isum += weight_int<F>(w, n, k) * xb[b].qs[k - b * kQBlock];
            xsum += xb[b].qs[k - b * kQBlock];
          }
          acc += float(isum) * (scale_of<F>(w, n, g) * xb[b].d);
          if (traits(F).has_min) acc += min_of<F>(w, n, g) * (xb[b].d * float(xsum));
        }
      }
      y[t * ldy + n] = acc;
    }
  }
}

template <QuantFormat F>
void matmul_fmt(const BlockA8* xq, int64_t T, const QuantWeight& w, int64_t n0, int64_t n1, float* y,
                int64_t ldy) {
  matmul_ref<F>(xq, T, w, n0, n1, y, ldy);
}

// Row n dequantized: s * code + m (K formats: (d * c) * code - dmin * mc), in the f32 operations
// ggml's reference uses, so GGUF blocks come out bit for bit as ggml / gguf-py dequantize them.
template <QuantFormat F>
void dequant_row_t(const QuantWeight& w, int64_t n, float* out) {
  for (int64_t k = 0; k < w.K; ++k) {
    const int64_t g = k / w.group;
    const float v = scale_of<F>(w, n, g) * float(weight_int<F>(w, n, k));
    if constexpr (traits(F).k_scales && traits(F).has_min)
      out[k] = v - kmin_value(w, n, g);
    else
      out[k] = traits(F).has_min ? v + min_of<F>(w, n, g) : v;
  }
}

void dequant_row(const QuantWeight& w, int64_t n, float* out) {
  switch (w.format) {
    case QuantFormat::Q8G: dequant_row_t<QuantFormat::Q8G>(w, n, out); break;
    case QuantFormat::Q4G: dequant_row_t<QuantFormat::Q4G>(w, n, out); break;
    case QuantFormat::Q4GA: dequant_row_t<QuantFormat::Q4GA>(w, n, out); break;
    case QuantFormat::Q8K: dequant_row_t<QuantFormat::Q8K>(w, n, out); break;
    case QuantFormat::Q4KA: dequant_row_t<QuantFormat::Q4KA>(w, n, out); break;
    case QuantFormat::Q8KA: dequant_row_t<QuantFormat::Q8KA>(w, n, out); break;
    case QuantFormat::Q6K: dequant_row_t<QuantFormat::Q6K>(w, n, out); break;
  }
}

// ---- weight quantizer --------------------------------------------------------------------------

// Σ w q and Σ q q for q = clamp(round(w * is), lo, hi), in 8 partial sums (quant.h).
void sym_sums(const float* w, int64_t n, float is, float lo, float hi, double* swq, double* sqq) {
  float a[8] = {0}, b[8] = {0};
  for (int64_t i = 0; i < n; i += 8) {
    for (int j = 0; j < 8; ++j) {
      float q = round_ne(w[i + j] * is);
      q = q < lo ? lo : q;
      q = q > hi ? hi : q;
      a[j] += w[i + j] * q;
      b[j] += q * q;
    }
  }
  *swq = *sqq = 0.0;
  for (int j = 0; j < 8; ++j) {
    *swq += a[j];
    *sqq += b[j];
  }
}

// Σ u, Σ u u, Σ u w for u = clamp(round((w - lo) * is), 0, 15).
void asym_sums(const float* w, int64_t n, float lo, float is, double* su, double* suu, double* suw) {
  float a[8] = {0}, b[8] = {0}, c[8] = {0};
  for (int64_t i = 0; i < n; i += 8) {
    for (int j = 0; j < 8; ++j) {
      float u = round_ne((w[i + j] - lo) * is);
      u = u < 0.0f ? 0.0f : u;
      u = u > 15.0f ? 15.0f : u;
      a[j] += u;
      b[j] += u * u;
      c[j] += u * w[i + j];
    }
  }
  *su = *suu = *suw = 0.0;
  for (int j = 0; j < 8; ++j) {
    *su += a[j];
    *suu += b[j];
    *suw += c[j];
  }
}

[[noreturn]] void range_error(const char* what, int64_t n, int64_t k0, float v) {
  throw std::invalid_argument(std::string("quantize: ") + what + " " + std::to_string(v) +
                              " in row " + std::to_string(n) + ", group starting at column " +
                              std::to_string(k0) + " does not fit an f16 scale");
}

uint16_t to_f16_checked(float v, const char* what, int64_t n, int64_t k0) {
  const uint16_t h = f32_to_f16_value(v);
  if ((h & 0x7c00u) == 0x7c00u) range_error(what, n, k0, v);
  return h;
}

// Nearest level q = clamp(round(w / s)) of every weight under scale s (all zero for s = 0), written
// to q unless null; returns the exact squared error Σ (w - s q)^2.
double sym_final(const float* w, int64_t len, float s, float lo, float hi, int* q) {
  const float is = s != 0.0f ? 1.0f / s : 0.0f;
  double err = 0.0;
  for (int64_t i = 0; i < len; ++i) {
    float v = w[i] * is;
    v = v < lo ? lo : (v > hi ? hi : v);  // clamp first: round_ne needs |v| < 2^22
    v = round_ne(v);
    if (q) q[i] = int(v);
    const double e = double(w[i]) - double(s) * v;
    err += e * e;
  }
  return err;
}

// Nearest u = clamp(round((w - m) / s), 0, 15) under (s, m); returns Σ (w - s u - m)^2.
double asym_final(const float* w, int64_t len, float s, float m, int* u) {
  const float is = s != 0.0f ? 1.0f / s : 0.0f;
  double err = 0.0;
  for (int64_t i = 0; i < len; ++i) {
    float v = (w[i] - m) * is;
    v = v < 0.0f ? 0.0f : (v > 15.0f ? 15.0f : v);
    v = round_ne(v);
    if (u) u[i] = int(v);
    const double e = double(w[i]) - (double(s) * v + double(m));
    err += e * e;
  }
  return err;
}

// Symmetric group: q in [qmin, qmax] (int8: [-127, 127]; int4: [-8, 7]), w ≈ s * q. Returns the
// f16 scale and writes q.
uint16_t quantize_group_sym(const QuantKernelTable& kt, const float* w, int64_t len, int qmin, int qmax,
                            int64_t n, int64_t k0, int* q) {
  float amax = 0.0f, wmax = 0.0f;
  double sww = 0.0;
  for (int64_t i = 0; i < len; ++i) {
    const float a = std::fabs(w[i]);
    if (a > amax) {
      amax = a;
      wmax = w[i];
    }
    sww += double(w[i]) * w[i];
  }
  if (amax == 0.0f) {  // all zeros: scale 0, never 1/0
    for (int64_t i = 0; i < len; ++i) q[i] = 0;
    return 0;
  }
  const float lo = float(qmin), hi = float(qmax);
  auto err_of = [&](double s, double swq, double sqq) { return sww - 2.0 * s * swq + s * s * sqq; };

  // Candidate 0: plain absmax, s = amax / qmax, q = round(w / s).
  const uint16_t absmax = to_f16_checked(amax / hi, "group absmax", n, k0);
  uint16_t best = absmax;
  double best_err;
  {
    const float s = f16_to_f32_value(best);
    double swq, sqq;
    kt.quant_sym_sums(w, len, s > 0.0f ? 1.0f / s : 0.0f, lo, hi, &swq, &sqq);
    best_err = s > 0.0f ? err_of(s, swq, sqq) : sww;
  }
  // Candidates: the largest weight mapped to ±t for t around qmax (and around qmin for int4,
  // whose range is lopsided), each with its least-squares scale for the resulting q.
  const int steps = 10;
  const float step = qmax > 7 ? 2.0f : 0.1f;
  for (int side = 0; side < (qmin + qmax < 0 ? 2 : 1); ++side) {
    const float t0 = side == 0 ? hi : -lo;
    for (int i = -steps; i <= steps; ++i) {
      const float t = t0 + step * float(i);
      const float is = (side == 0 ? t : -t) / wmax;
      double swq, sqq;
      kt.quant_sym_sums(w, len, is, lo, hi, &swq, &sqq);
      if (sqq <= 0.0) continue;
      const float s = float(swq / sqq);
      if (!(std::fabs(s) < 65504.0f)) continue;
      const uint16_t h = f32_to_f16_value(s);
      const double s16 = f16_to_f32_value(h);
      const double e = err_of(s16, swq, sqq);
      if (e < best_err) {
        best_err = e;
        best = h;
      }
    }
  }
  // The closed form above ranks candidates with float sums; the final choice between the best
  // candidate and absmax uses the exact error of what is stored (every weight at its nearest level
  // under the f16 scale), so the result is never worse than absmax rounding.
  const double e_best = sym_final(w, len, f16_to_f32_value(best), lo, hi, q);
  const double e_absmax = sym_final(w, len, f16_to_f32_value(absmax), lo, hi, nullptr);
  if (e_absmax <= e_best) {
    sym_final(w, len, f16_to_f32_value(absmax), lo, hi, q);
    return absmax;
  }
  return best;
}

// Asymmetric group: u in [0, 15], w ≈ s * u + m. Writes the f16 scale and min, and u.
void quantize_group_asym(const QuantKernelTable& kt, const float* w, int64_t len, int64_t n, int64_t k0,
                         uint16_t& s_out, uint16_t& m_out, int* u) {
  float wmin = w[0], wmax = w[0];
  double sw = 0.0, sww = 0.0;
  for (int64_t i = 0; i < len; ++i) {
    wmin = w[i] < wmin ? w[i] : wmin;
    wmax = w[i] > wmax ? w[i] : wmax;
    sw += w[i];
    sww += double(w[i]) * w[i];
  }
  const double cnt = double(len);
  if (wmax == wmin) {  // constant group (all zeros included): s = 0, m = the value
    s_out = 0;
    m_out = to_f16_checked(wmin, "group value", n, k0);
    for (int64_t i = 0; i < len; ++i) u[i] = 0;
    return;
  }
  auto err_of = [&](double s, double m, double su, double suu, double suw) {
    return sww + s * s * suu + cnt * m * m - 2.0 * s * suw - 2.0 * m * sw + 2.0 * s * m * su;
  };
  // Candidate 0: s = (max - min) / 15, m = min.
  const uint16_t base_s = to_f16_checked((wmax - wmin) / 15.0f, "group range", n, k0);
  const uint16_t base_m = to_f16_checked(wmin, "group min", n, k0);
  uint16_t best_s = base_s, best_m = base_m;
  double best_err;
  {
    const float s = f16_to_f32_value(best_s), m = f16_to_f32_value(best_m);
    double su, suu, suw;
    kt.quant_asym_sums(w, len, m, s > 0.0f ? 1.0f / s : 0.0f, &su, &suu, &suw);
    best_err = err_of(s, m, su, suu, suw);
  }
  const float range = wmax - wmin;
  for (int i = -10; i <= 10; ++i) {
    const float is = (15.0f + 0.1f * float(i)) / range;
    double su, suu, suw;
    kt.quant_asym_sums(w, len, wmin, is, &su, &suu, &suw);
    const double det = cnt * suu - su * su;
    if (det <= 0.0) continue;
    const double s = (cnt * suw - su * sw) / det;
    const double m = (sw - s * su) / cnt;
    if (!(std::fabs(s) < 65504.0) || !(std::fabs(m) < 65504.0)) continue;
    const uint16_t hs = f32_to_f16_value(float(s)), hm = f32_to_f16_value(float(m));
    const double s16 = f16_to_f32_value(hs), m16 = f16_to_f32_value(hm);
    const double e = err_of(s16, m16, su, suu, suw);
    if (e < best_err) {
      best_err = e;
      best_s = hs;
      best_m = hm;
    }
  }
  // Exact errors of what is stored decide between the best candidate and the baseline.
  const double e_best = asym_final(w, len, f16_to_f32_value(best_s), f16_to_f32_value(best_m), u);
  const double e_base = asym_final(w, len, f16_to_f32_value(base_s), f16_to_f32_value(base_m), nullptr);
  if (e_base <= e_best) {
    best_s = base_s;
    best_m = base_m;
    asym_final(w, len, f16_to_f32_value(best_s), f16_to_f32_value(best_m), u);
  }
  s_out = best_s;
  m_out = best_m;
}

}  // namespace

void quantize_row(const QuantKernelTable& kt, const float* w, int64_t K, int64_t group,
                  QuantFormat format, int64_t n, const QuantOut& out) {
  for (int64_t k = 0; k < K; ++k)
    if (!std::isfinite(w[k]))
      throw std::invalid_argument("quantize: non-finite weight " + std::to_string(w[k]) + " at row " +
                                  std::to_string(n) + ", column " + std::to_string(k));
  QuantWeight view{};  // where row n's values go in the row tiles
  view.format = format;
  view.N = out.N;
  view.K = K;
  view.group = group;
  const int64_t G = view.groups();
  int q[kQBlock * 4];  // one group of up to 128 values; a per-row group gets a heap buffer
  int* qs = q;
  std::unique_ptr<int[]> big;
  if (group > int64_t(sizeof q / sizeof q[0])) {
    big.reset(new int[size_t(group)]);
    qs = big.get();
  }
  for (int64_t g = 0; g < G; ++g) {
    const int64_t k0 = g * group, len = k0 + group <= K ? group : K - k0;
    const int64_t si = scale_index(view, n, g);
    switch (format) {
      case QuantFormat::Q8G: {
        out.scales[si] = quantize_group_sym(kt, w + k0, len, -127, 127, n, k0, qs);
        int8_t* dst = static_cast<int8_t*>(out.qweight);
        for (int64_t i = 0; i < len; ++i) dst[qweight_index(view, n, k0 + i)] = int8_t(qs[i]);
        continue;
      }
      case QuantFormat::Q4G:
        out.scales[si] = quantize_group_sym(kt, w + k0, len, -8, 7, n, k0, qs);
        for (int64_t i = 0; i < len; ++i) qs[i] += 8;
        break;
      case QuantFormat::Q4GA:
        quantize_group_asym(kt, w + k0, len, n, k0, out.scales[si], out.mins[si], qs);
        break;
    }
    uint8_t* dst = static_cast<uint8_t*>(out.qweight);
    for (int64_t i = 0; i < len; ++i) {
      const int64_t k = k0 + i;
      const int shift = (k & 4) ? 4 : 0;
      uint8_t& byte = dst[qweight_index(view, n, k)];
      byte = uint8_t((byte & (0xf0 >> shift)) | (qs[i] << shift));
    }
  }
}

const QuantKernelTable& quant_scalar_table() {
  static const QuantKernelTable table = {
      "scalar",
      quantize_a8,
      {matmul_fmt<QuantFormat::Q8G>, matmul_fmt<QuantFormat::Q4G>, matmul_fmt<QuantFormat::Q4GA>,
       matmul_fmt<QuantFormat::Q8K>, matmul_fmt<QuantFormat::Q4KA>, matmul_fmt<QuantFormat::Q8KA>,
       matmul_fmt<QuantFormat::Q6K>},
      dequant_row,
      sym_sums,
      asym_sums,
  };
  return table;
}

}  // namespace kernels
}  // namespace exaone
