// Every SIMD kernel table this CPU can run, against the scalar reference, in plain C++ so the same
// checks run natively and on aarch64 under qemu (where Python is not available). Sizes sweep the
// tails of every vector width; outputs are pre-filled with NaN so an unwritten element fails.
// The quantized kernels likewise: every quant table (scalar, avx2, avx2-vnni, avx2-avx512vnni, neon, neon-dotprod) against
// the scalar one, bit for bit wherever the math allows it.
// Prints one line per failure and ends with "N passed, M failed"; exits non-zero on any failure.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "kernels/dispatch.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"

using exaone::kernels::BlockA8;
using exaone::kernels::KernelTable;
using exaone::kernels::kQBlock;
using exaone::kernels::QuantFormat;
using exaone::kernels::QuantKernelTable;
using exaone::kernels::QuantOut;
using exaone::kernels::QuantWeight;

namespace {

int g_passed = 0, g_failed = 0;

struct Rng {
  uint64_t s = 0x9E3779B97F4A7C15ull;
  float uniform() {  // [-1, 1)
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return float(int32_t(uint32_t(s >> 32))) / 2147483648.0f;
  }
  int below(int n) {  // [0, n)
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return int((s >> 33) % uint64_t(n));
  }
  std::vector<float> vec(size_t n, float scale = 1.0f) {
    std::vector<float> v(n);
    for (auto& x : v) x = uniform() * scale;
    return v;
  }
};

const float kNaN = std::numeric_limits<float>::quiet_NaN();

// Pass when every element is finite and within tol * max(|ref|) of the reference.
void check(const char* isa, const std::string& what, const std::vector<float>& got,
           const std::vector<float>& ref, float tol) {
  float scale = 1e-30f;
  for (float r : ref) scale = std::fmax(scale, std::fabs(r));
  for (size_t i = 0; i < got.size(); ++i) {
    const float err = std::fabs(got[i] - ref[i]);
    if (!(err <= tol * scale)) {  // also catches NaN
      std::printf("FAIL %s %s: element %zu is %.9g, reference %.9g (tol %.3g of %.3g)\n", isa,
                  what.c_str(), i, double(got[i]), double(ref[i]), double(tol), double(scale));
      ++g_failed;
      return;
    }
  }
  ++g_passed;
}

uint16_t to_bf16(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return uint16_t((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}

void test_table(const KernelTable& t, const KernelTable& ref) {
  Rng rng;
  const char* isa = t.name;
  // matmul over every weight format, T and K tails, N tails
  for (int64_t K : {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100}) {
    for (int64_t T : {1, 2, 3, 4, 5, 9, 33}) {
      for (int64_t N : {1, 2, 3, 4, 5, 7, 9, 13}) {
        const auto x = rng.vec(size_t(T * K));
        const auto wf = rng.vec(size_t(N * K));
        std::vector<uint16_t> wb(wf.size()), wh(wf.size());
        for (size_t i = 0; i < wf.size(); ++i) wb[i] = to_bf16(wf[i]);
        // f16 patterns of small values: sign, exponent 10..17, random mantissa
        for (size_t i = 0; i < wf.size(); ++i)
          wh[i] = uint16_t(((rng.uniform() < 0 ? 1u : 0u) << 15) |
                           ((10u + uint32_t((rng.uniform() + 1) * 4)) << 10) |
                           (uint32_t((rng.uniform() + 1) * 511) & 0x3ffu));
        const float tol = 2e-6f * float(K + 4);
        const std::string tag = " T=" + std::to_string(T) + " K=" + std::to_string(K) + " N=" + std::to_string(N);
        std::vector<float> a(size_t(T * N), kNaN), b(size_t(T * N), kNaN);
        t.matmul_f32(x.data(), T, K, wf.data(), 0, N, a.data(), N);
        ref.matmul_f32(x.data(), T, K, wf.data(), 0, N, b.data(), N);
        check(isa, "matmul_f32" + tag, a, b, tol);
        a.assign(a.size(), kNaN);
        t.matmul_bf16(x.data(), T, K, wb.data(), 0, N, a.data(), N);
        ref.matmul_bf16(x.data(), T, K, wb.data(), 0, N, b.data(), N);
        check(isa, "matmul_bf16" + tag, a, b, tol);
        a.assign(a.size(), kNaN);
        t.matmul_f16(x.data(), T, K, wh.data(), 0, N, a.data(), N);
        ref.matmul_f16(x.data(), T, K, wh.data(), 0, N, b.data(), N);
        check(isa, "matmul_f16" + tag, a, b, tol);
      }
    }
  }
  // a column range that starts inside the matrix (how the thread pool splits work)
  {
    const int64_t T = 3, K = 19, N = 11;
    const auto x = rng.vec(T * K), w = rng.vec(N * K);
    std::vector<float> a(T * N, kNaN), b(T * N, kNaN);
    t.matmul_f32(x.data(), T, K, w.data(), 0, 5, a.data(), N);
    t.matmul_f32(x.data(), T, K, w.data(), 5, N, a.data(), N);
    ref.matmul_f32(x.data(), T, K, w.data(), 0, N, b.data(), N);
    check(isa, "matmul_f32 split columns", a, b, 1e-5f);
  }
  for (int64_t n = 1; n <= 40; ++n) {
    const std::string tag = " n=" + std::to_string(n);
    const auto x = rng.vec(size_t(n), 3.0f), y = rng.vec(size_t(n)), w = rng.vec(size_t(n));
    check(isa, "dot_f32" + tag, {t.dot_f32(x.data(), y.data(), n)}, {ref.dot_f32(x.data(), y.data(), n)}, 1e-5f);
    auto a = y, b = y;
    t.axpy_f32(0.7f, x.data(), a.data(), n);
    ref.axpy_f32(0.7f, x.data(), b.data(), n);
    check(isa, "axpy_f32" + tag, a, b, 1e-6f);
    for (bool acc : {false, true}) {
      std::vector<float> o1(size_t(n), acc ? 0.5f : kNaN), o2(size_t(n), acc ? 0.5f : kNaN);
      t.rmsnorm_f32(x.data(), w.data(), n, 1e-5f, o1.data(), acc);
      ref.rmsnorm_f32(x.data(), w.data(), n, 1e-5f, o2.data(), acc);
      check(isa, std::string("rmsnorm_f32") + (acc ? " accumulate" : "") + tag, o1, o2, 4e-6f);
    }
    auto g = rng.vec(size_t(n), 8.0f);
    if (n >= 2) g[0] = -100.0f, g[1] = 100.0f;  // saturated exp
    std::vector<float> s1(size_t(n), kNaN), s2(size_t(n), kNaN);
    t.silu_mul_f32(g.data(), y.data(), n, s1.data());
    ref.silu_mul_f32(g.data(), y.data(), n, s2.data());
    check(isa, "silu_mul_f32" + tag, s1, s2, 4e-6f);
    auto p1 = g, p2 = g;
    t.softmax_f32(p1.data(), n);
    ref.softmax_f32(p2.data(), n);
    check(isa, "softmax_f32" + tag, p1, p2, 4e-6f);
    {  // the sampler's softmax numerator: masked (-inf) and underflowing entries are exactly 0
      auto x = rng.vec(size_t(n), 20.0f);
      x[size_t(n) / 2] = -std::numeric_limits<float>::infinity();
      float shift = x[0];
      for (float v : x) shift = std::fmax(shift, v);
      std::vector<float> e1(size_t(n), kNaN), e2(size_t(n), kNaN);
      const double s1 = t.exp_shifted_f32(x.data(), n, shift, 1.7f, e1.data());
      const double s2 = ref.exp_shifted_f32(x.data(), n, shift, 1.7f, e2.data());
      check(isa, "exp_shifted_f32" + tag, e1, e2, 2e-6f);
      check(isa, "exp_shifted_f32 sum" + tag, {float(s1)}, {float(s2)}, 2e-6f);
      for (int64_t i = 0; i < n; ++i) {
        if ((x[size_t(i)] - shift) * 1.7f < -87.0f && e1[size_t(i)] != 0.0f)
          check(isa, "exp_shifted_f32 zero below -87" + tag, {e1[size_t(i)]}, {0.0f}, 0.0f);
      }
    }
    {  // the sampler's other passes: mass above cut-offs, max with copy and finiteness, range search
      auto e = rng.vec(size_t(n));
      for (auto& v : e) v = std::fabs(v);
      if (n > 3) e[1] = 0.0f, e[2] = e[0];  // zeros and ties
      const float cuts[8] = {0.9f, 0.5f, e[0], 0.25f, 0.1f, 0.01f, 1e-30f, 0.0f};
      for (int64_t k = 1; k <= 8; ++k) {
        double g1[8], g2[8];
        t.sums_at_least_f32(e.data(), n, cuts, k, g1);
        ref.sums_at_least_f32(e.data(), n, cuts, k, g2);
        for (int64_t j = 0; j < k; ++j)
          check(isa, "sums_at_least_f32 k=" + std::to_string(k) + tag, {float(g1[j])}, {float(g2[j])}, 1e-6f);
      }
      auto x = rng.vec(size_t(n), 5.0f);
      std::vector<float> c1(size_t(n), kNaN), c2(size_t(n), kNaN);
      bool f1, f2;
      const float m1 = t.max_f32(x.data(), n, c1.data(), &f1), m2 = ref.max_f32(x.data(), n, c2.data(), &f2);
      check(isa, "max_f32" + tag, {m1}, {m2}, 0.0f);
      check(isa, "max_f32 copy" + tag, c1, c2, 0.0f);
      if (f1 != f2 || !f1) check(isa, "max_f32 finite" + tag, {float(f1)}, {1.0f}, 0.0f);
      for (float bad : {kNaN, std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()}) {
        auto y = x;
        y[size_t(n) - 1] = bad;
        t.max_f32(y.data(), n, nullptr, &f1);
        if (f1) check(isa, "max_f32 sees a non-finite value" + tag, {1.0f}, {0.0f}, 0.0f);
      }
      std::vector<int32_t> i1(size_t(n), -1), i2(size_t(n), -1);
      const int64_t n1 = t.find_in_range_f32(x.data(), n, -1.0f, 2.0f, i1.data());
      const int64_t n2 = ref.find_in_range_f32(x.data(), n, -1.0f, 2.0f, i2.data());
      if (n1 != n2) {
        check(isa, "find_in_range_f32 count" + tag, {float(n1)}, {float(n2)}, 0.0f);
      } else {
        check(isa, "find_in_range_f32" + tag, std::vector<float>(i1.begin(), i1.begin() + n1),
              std::vector<float>(i2.begin(), i2.begin() + n2), 0.0f);
      }
    }
    auto r1 = rng.vec(size_t(2 * n)), r2 = r1;
    const auto c = rng.vec(size_t(n)), s = rng.vec(size_t(n));
    t.rope_f32(r1.data(), c.data(), s.data(), n);
    ref.rope_f32(r2.data(), c.data(), s.data(), n);
    check(isa, "rope_f32 half" + tag, r1, r2, 2e-6f);
  }
  // GQA attention over a ring-like slot list (out of order, with a stride between slots)
  for (int64_t G : {1, 2, 4}) {
    for (int64_t D : {1, 3, 8, 9, 16, 17, 32, 64}) {
      for (int64_t n : {1, 2, 7, 8, 9, 33, 70, 130}) {  // past one 64-key value block too
        const int64_t stride = 2 * D + 1, S = n + 3;
        const auto q = rng.vec(size_t(G * D), 2.0f), k = rng.vec(size_t(S * stride), 2.0f);
        const auto v = rng.vec(size_t(S * stride));
        std::vector<int64_t> slots(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) slots[size_t(i)] = (i * 5 + 2) % S;
        std::vector<float> sc1(size_t(G * n)), sc2(size_t(G * n));
        std::vector<float> o1(size_t(G * D), kNaN), o2(size_t(G * D), kNaN);
        t.attend_f32(q.data(), G, D, k.data(), v.data(), stride, slots.data(), n, 0.3f, sc1.data(), o1.data());
        ref.attend_f32(q.data(), G, D, k.data(), v.data(), stride, slots.data(), n, 0.3f, sc2.data(), o2.data());
        check(isa, "attend_f32 G=" + std::to_string(G) + " D=" + std::to_string(D) + " n=" + std::to_string(n),
              o1, o2, 4e-6f);
        // the f16 cache: the reference against attend_f32 on the widened rows, this ISA against it
        std::vector<uint16_t> k16(k.size()), v16(v.size());
        for (size_t j = 0; j < k.size(); ++j) k16[j] = exaone::kernels::f32_to_f16_value(k[j]);
        for (size_t j = 0; j < v.size(); ++j) v16[j] = exaone::kernels::f32_to_f16_value(v[j]);
        std::vector<float> kw(k.size()), vw(v.size());
        ref.f16_to_f32(k16.data(), kw.data(), int64_t(k16.size()));
        ref.f16_to_f32(v16.data(), vw.data(), int64_t(v16.size()));
        std::vector<float> o3(size_t(G * D), kNaN), o4(size_t(G * D), kNaN);
        ref.attend_f32(q.data(), G, D, kw.data(), vw.data(), stride, slots.data(), n, 0.3f, sc2.data(), o3.data());
        ref.attend_f16(q.data(), G, D, k16.data(), v16.data(), stride, slots.data(), n, 0.3f, sc2.data(), o4.data());
        const std::string tag = " G=" + std::to_string(G) + " D=" + std::to_string(D) + " n=" + std::to_string(n);
        check(isa, "scalar attend_f16 vs attend_f32 on widened rows" + tag, o4, o3, 1e-6f);
        if (t.attend_f16) {
          std::vector<float> o5(size_t(G * D), kNaN);
          t.attend_f16(q.data(), G, D, k16.data(), v16.data(), stride, slots.data(), n, 0.3f, sc1.data(), o5.data());
          check(isa, "attend_f16" + tag, o5, o4, 4e-6f);
        }
        // the int8 cache: rows as int8 codes with one scale per slot; the reference against
        // attend_f32 on the rows widened and scaled, this ISA against the reference
        std::vector<int8_t> k8(k.size()), v8(v.size());
        std::vector<float> ks(static_cast<size_t>(S)), vs(static_cast<size_t>(S));
        for (int64_t r = 0; r < S; ++r) {
          ks[size_t(r)] = 0.002f + 0.002f * float(r % 7);  // |k| up to 1.8, as the f32 rows
          vs[size_t(r)] = 0.004f + 0.002f * float(r % 5);
        }
        for (size_t j = 0; j < k.size(); ++j) k8[j] = int8_t(int((j * 37 + 11) % 255) - 127);
        for (size_t j = 0; j < v.size(); ++j) v8[j] = int8_t(int((j * 53 + 7) % 255) - 127);
        for (size_t j = 0; j < k.size(); ++j) kw[j] = float(k8[j]) * ks[j / size_t(stride)];
        for (size_t j = 0; j < v.size(); ++j) vw[j] = float(v8[j]) * vs[j / size_t(stride)];
        std::vector<float> o6(size_t(G * D), kNaN), o7(size_t(G * D), kNaN);
        ref.attend_f32(q.data(), G, D, kw.data(), vw.data(), stride, slots.data(), n, 0.3f, sc2.data(), o6.data());
        ref.attend_i8(q.data(), G, D, k8.data(), v8.data(), ks.data(), vs.data(), stride, slots.data(), n, 0.3f,
                      sc2.data(), o7.data());
        check(isa, "scalar attend_i8 vs attend_f32 on widened rows" + tag, o7, o6, 4e-6f);
        if (t.attend_i8) {
          std::vector<float> o8(size_t(G * D), kNaN);
          t.attend_i8(q.data(), G, D, k8.data(), v8.data(), ks.data(), vs.data(), stride, slots.data(), n, 0.3f,
                      sc1.data(), o8.data());
          check(isa, "attend_i8" + tag, o8, o7, 4e-6f);
        }
      }
    }
  }
  // prefill attention over a block of tokens: keys out of order (a ring), causal and windowed
  // masks, rows that see nothing, head_dims the variant may decline (then it must say so)
  if (t.attend_rows) {
    using exaone::kernels::KVElem;
    for (int64_t G : {1, 4, 5}) {
      for (int64_t D : {16, 17, 64, 80, 128}) {
        for (int64_t T : {1, 3, 16}) {
          for (int64_t n : {0, 1, 31, 33, 70}) {
            for (int64_t window : {0, 9}) {
             for (int64_t late : {0, 200}) {  // late queries see every key (or, windowed, none)
              const int64_t stride = D + 3, S = n + 5, ld = (G + 1) * D;
              const auto q = rng.vec(size_t(T * ld), 2.0f), k = rng.vec(size_t(S * stride), 2.0f);
              const auto v = rng.vec(size_t(S * stride));
              std::vector<int64_t> slots(static_cast<size_t>(n)), kpos(static_cast<size_t>(n)), qpos(static_cast<size_t>(T));
              for (int64_t i = 0; i < n; ++i) {
                slots[size_t(i)] = (i * 7 + 3) % S;
                kpos[size_t(i)] = (i * 13 + 5) % (n + 2);  // positions out of order, some repeated
              }
              for (int64_t u = 0; u < T; ++u) qpos[size_t(u)] = late + n / 2 + 3 * u - 2;  // token 0 may see none
              std::vector<uint16_t> k16(k.size()), v16(v.size());
              for (size_t j = 0; j < k.size(); ++j) k16[j] = exaone::kernels::f32_to_f16_value(k[j]);
              for (size_t j = 0; j < v.size(); ++j) v16[j] = exaone::kernels::f32_to_f16_value(v[j]);
              std::vector<int8_t> k8(k.size()), v8(v.size());
              for (size_t j = 0; j < k.size(); ++j) k8[j] = int8_t(int((j * 37 + 11) % 255) - 127);
              for (size_t j = 0; j < v.size(); ++j) v8[j] = int8_t(int((j * 53 + 7) % 255) - 127);
              std::vector<float> ks(static_cast<size_t>(S)), vs(static_cast<size_t>(S));
              for (int64_t r = 0; r < S; ++r) ks[size_t(r)] = 0.002f + 0.002f * float(r % 7), vs[size_t(r)] = 0.004f;
              for (KVElem kv : {KVElem::F32, KVElem::F16, KVElem::I8}) {
                const void* kp = kv == KVElem::F32 ? static_cast<const void*>(k.data())
                                 : kv == KVElem::F16 ? static_cast<const void*>(k16.data()) : k8.data();
                const void* vp = kv == KVElem::F32 ? static_cast<const void*>(v.data())
                                 : kv == KVElem::F16 ? static_cast<const void*>(v16.data()) : v8.data();
                const float* ksp = kv == KVElem::I8 ? ks.data() : nullptr;
                const float* vsp = kv == KVElem::I8 ? vs.data() : nullptr;
                std::vector<float> o1(size_t(T * ld), 7.0f), o2(size_t(T * ld), 7.0f);
                ref.attend_rows(kv, q.data(), T, G, ld, D, qpos.data(), kp, vp, ksp, vsp, stride, slots.data(),
                                kpos.data(), n, window, 0.3f, o2.data());
                const std::string tag = " kv=" + std::to_string(int(kv)) + " G=" + std::to_string(G) + " D=" +
                                        std::to_string(D) + " T=" + std::to_string(T) + " n=" + std::to_string(n) +
                                        " window=" + std::to_string(window) + " late=" + std::to_string(late);
                for (int64_t u = 0; u < T; ++u)  // the reference leaves the other heads of a token alone
                  for (int64_t j = G * D; j < ld; ++j) o1[size_t(u * ld + j)] = kNaN, o2[size_t(u * ld + j)] = kNaN;
                if (!t.attend_rows(kv, q.data(), T, G, ld, D, qpos.data(), kp, vp, ksp, vsp, stride, slots.data(),
                                   kpos.data(), n, window, 0.3f, o1.data())) {
                  if (D % 16 == 0) check(isa, "attend_rows declined" + tag, {1.0f}, {0.0f}, 0.0f);
                  continue;
                }
                for (size_t j = 0; j < o1.size(); ++j)  // the untouched gaps compare equal
                  if (std::isnan(o2[j]) && std::isnan(o1[j])) o1[j] = o2[j] = 0.0f;
                check(isa, "attend_rows" + tag, o1, o2, 4e-6f);
              }
             }
            }
          }
        }
      }
    }
  }
  // conversions are exact: every bf16 and every finite f16 pattern
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < 65536; ++i) all[i] = uint16_t(i);
  std::vector<float> c1(65536, kNaN), c2(65536, kNaN);
  t.bf16_to_f32(all.data(), c1.data(), 65536);
  ref.bf16_to_f32(all.data(), c2.data(), 65536);
  bool same = std::memcmp(c1.data(), c2.data(), sizeof(float) * 65536) == 0;
  t.f16_to_f32(all.data(), c1.data(), 65536);
  ref.f16_to_f32(all.data(), c2.data(), 65536);
  for (uint32_t i = 0; i < 65536; ++i)
    if (!std::isnan(c2[i]) && std::memcmp(&c1[i], &c2[i], 4) != 0) same = false;
  // and back: every half, the midpoints between neighbours (ties to even), random bit patterns
  std::vector<float> narrow;
  for (uint32_t i = 0; i < 65536; ++i) {
    if (std::isnan(c2[i])) continue;
    narrow.push_back(c2[i]);
    if (i + 1 < 65536 && std::isfinite(c2[i]) && !std::isnan(c2[i + 1])) narrow.push_back(0.5f * c2[i] + 0.5f * c2[i + 1]);
  }
  uint64_t bits = 7;
  for (int i = 0; i < 65536; ++i) {
    bits = bits * 6364136223846793005ull + 1442695040888963407ull;
    const uint32_t b = uint32_t(bits >> 32);
    float f;
    std::memcpy(&f, &b, 4);
    if (!std::isnan(f)) narrow.push_back(f);
  }
  std::vector<uint16_t> h1(narrow.size()), h2(narrow.size());
  t.f32_to_f16(narrow.data(), h1.data(), int64_t(narrow.size()));
  ref.f32_to_f16(narrow.data(), h2.data(), int64_t(narrow.size()));
  if (h1 != h2) same = false;
  if (same) {
    ++g_passed;
  } else {
    std::printf("FAIL %s bf16/f16 conversion differs from the reference\n", isa);
    ++g_failed;
  }
}

// ---- quantized kernels ---------------------------------------------------------------------------

struct QuantTable {
  std::string name;  // the SDOT table is named "neon" like its kernel table: told apart here
  const QuantKernelTable* t;
};

// Every quant table this build has and this CPU runs, the scalar reference first.
std::vector<QuantTable> quant_tables() {
  namespace k = exaone::kernels;
  std::vector<QuantTable> v{{"scalar", &k::quant_scalar_table()}};
  if (k::cpu_features().avx2 && k::quant_avx2_table()) v.push_back({"avx2", k::quant_avx2_table()});
  if (k::quant_avxvnni_table()) v.push_back({"avx2-vnni", k::quant_avxvnni_table()});
  if (k::quant_avx512vnni_table()) v.push_back({"avx2-avx512vnni", k::quant_avx512vnni_table()});
  if (k::cpu_features().neon && k::quant_neon_table()) v.push_back({"neon", k::quant_neon_table()});
  if (k::quant_neon_dotprod_table()) v.push_back({"neon-dotprod", k::quant_neon_dotprod_table()});
  return v;
}

std::string quant_name(const QuantKernelTable& t) {
  for (const auto& q : quant_tables())
    if (q.t == &t) return q.name;
  return std::string("unknown ") + t.name;
}

void pass_if(bool ok, const std::string& what) {
  if (ok) {
    ++g_passed;
  } else {
    std::printf("FAIL %s\n", what.c_str());
    ++g_failed;
  }
}

const char* fmt_name(QuantFormat f) { return exaone::kernels::traits(f).name; }

// A quantized matrix in the row-tile layout, owning its arrays.
struct QMat {
  QuantFormat format;
  int64_t N, K, group;
  std::vector<uint8_t> qw, ks;
  std::vector<uint16_t> sc, mn;
  QMat(QuantFormat f, int64_t n, int64_t k, int64_t g) : format(f), N(n), K(k), group(g) {
    const QuantWeight w = view();
    qw.assign(size_t(N * w.row_bytes()), 0);
    if (exaone::kernels::traits(f).k_scales) {
      ks.assign(size_t(N * w.kscale_row_bytes()), 0);
    } else {
      sc.assign(size_t(N * w.groups()), 0);
      if (f == QuantFormat::Q4GA) mn.assign(sc.size(), 0);
    }
  }
  QuantWeight view() const {
    const bool k = exaone::kernels::traits(format).k_scales;
    return {format, N, K, group, qw.data(), k ? nullptr : sc.data(),
            format == QuantFormat::Q4GA ? mn.data() : nullptr, k ? ks.data() : nullptr};
  }
  QuantOut out() { return {N, qw.data(), sc.data(), format == QuantFormat::Q4GA ? mn.data() : nullptr}; }
  bool operator==(const QMat& o) const { return qw == o.qw && sc == o.sc && mn == o.mn && ks == o.ks; }
};

// Scale and added min of group g of row n, in either scale layout.
double scale_value(const QuantWeight& w, int64_t n, int64_t g) {
  if (exaone::kernels::traits(w.format).k_scales) return exaone::kernels::kscale_value(w, n, g);
  return exaone::kernels::f16_to_f32_value(w.scales[exaone::kernels::scale_index(w, n, g)]);
}
double min_value(const QuantWeight& w, int64_t n, int64_t g) {
  if (!exaone::kernels::traits(w.format).has_min) return 0.0;
  if (exaone::kernels::traits(w.format).k_scales) return -double(exaone::kernels::kmin_value(w, n, g));
  return exaone::kernels::f16_to_f32_value(w.mins[exaone::kernels::scale_index(w, n, g)]);
}

// The matmul in double from the integer sums of each block (or half block, for groups of 16):
// val = Σ isum * s_g * d_b [+ m_g * d_b * Σ qs], and mag the same sum of |terms|, the scale of the
// f32 rounding kernels may differ by.
void matmul_double(const BlockA8* xq, int64_t T, const QuantWeight& w, std::vector<double>& val,
                   std::vector<double>& mag) {
  const int64_t N = w.N, K = w.K, nb = w.blocks(), span = w.group < kQBlock ? w.group : kQBlock;
  std::vector<int> wi(size_t(N * K));  // signed weights (Q4G: u - 8), row-major
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k)
      wi[size_t(n * K + k)] = exaone::kernels::weight_code(w, n, k) - (w.format == QuantFormat::Q4G ? 8 : 0);
  val.assign(size_t(T * N), 0.0);
  mag.assign(size_t(T * N), 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t b = 0; b < nb; ++b) {
        const BlockA8& x = xq[t * nb + b];
        for (int64_t k0 = 0; k0 < kQBlock; k0 += span) {
          int64_t isum = 0, xsum = 0;
          for (int64_t i = k0; i < k0 + span; ++i) {
            isum += int64_t(wi[size_t(n * K + b * kQBlock + i)]) * x.qs[i];
            xsum += x.qs[i];
          }
          const int64_t g = (b * kQBlock + k0) / w.group;
          const double term = double(isum) * scale_value(w, n, g) * x.d;
          val[size_t(t * N + n)] += term;
          mag[size_t(t * N + n)] += std::fabs(term);
          if (exaone::kernels::traits(w.format).has_min) {
            const double mterm = min_value(w, n, g) * x.d * double(xsum);
            val[size_t(t * N + n)] += mterm;
            mag[size_t(t * N + n)] += std::fabs(mterm);
          }
        }
      }
}

exaone::kernels::QuantMatmulFn matmul_of(const QuantKernelTable& t, QuantFormat f) { return t.matmul[int(f)]; }

// Runs fn over [0, N) in the given column pieces into a NaN-filled [T, ldy = N + 2] buffer;
// returns the [T, N] part, or an empty vector when the padding columns were written.
std::vector<float> run_matmul(exaone::kernels::QuantMatmulFn fn, const std::vector<BlockA8>& xq, int64_t T,
                              const QuantWeight& w, const std::vector<int64_t>& cuts) {
  const int64_t N = w.N, ldy = N + 2;
  std::vector<float> y(size_t(T * ldy), kNaN);
  for (size_t c = 0; c + 1 < cuts.size(); ++c) fn(xq.data(), T, w, cuts[c], cuts[c + 1], y.data(), ldy);
  std::vector<float> out(size_t(T * N));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t n = 0; n < N; ++n) out[size_t(t * N + n)] = y[size_t(t * ldy + n)];
    for (int64_t n = N; n < ldy; ++n)
      if (!std::isnan(y[size_t(t * ldy + n)])) return {};
  }
  return out;
}

// Pass when every element is within tol * mag[i] of ref (mag: the sum of |terms| of element i).
void check_rel(const std::string& what, const std::vector<float>& got, const std::vector<double>& ref,
               const std::vector<double>& mag, double tol) {
  if (got.size() != ref.size()) {
    std::printf("FAIL %s: wrote outside its columns\n", what.c_str());
    ++g_failed;
    return;
  }
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - ref[i]);
    if (!(err <= tol * mag[i])) {  // also catches NaN
      std::printf("FAIL %s: element %zu is %.9g, reference %.9g (tol %.3g of %.3g)\n", what.c_str(), i,
                  double(got[i]), ref[i], tol, mag[i]);
      ++g_failed;
      return;
    }
  }
  ++g_passed;
}

bool same_bits(const void* a, const void* b, size_t bytes) { return std::memcmp(a, b, bytes) == 0; }

// quantize_a8 must give the scalar blocks bit for bit: zero, tiny, boundary, tie and outlier blocks.
void test_quant_activations(const std::vector<QuantTable>& tables) {
  Rng rng;
  for (int64_t K : {32, 64, 96, 2080}) {
    auto x = rng.vec(size_t(K), 3.0f);
    const int64_t nb = K / kQBlock;
    auto blk = [&](int64_t b) { return x.data() + (b % nb) * kQBlock; };
    for (int i = 0; i < kQBlock; ++i) blk(1)[i] = 0.0f;             // all zero: d = 0, no 1/0
    for (int i = 0; i < kQBlock; ++i) blk(2)[i] *= 1e-32f;          // below the 1e-30 cut
    for (int i = 0; i < kQBlock; ++i) blk(3)[i] *= 1e-33f;
    blk(3)[7] = -1e-30f;                                            // exactly at the cut: kept
    for (int i = 0; i < kQBlock; ++i) blk(4)[i] = float(i % 16) * (i & 1 ? -1.0f : 1.0f) + 0.5f;
    blk(4)[31] = -127.0f;                                           // d = 1: the rest .5 ties
    blk(5)[9] = 1e4f;                                               // an outlier
    for (int i = 0; i < kQBlock; ++i) blk(6)[i] = 1e-39f * float(i);  // subnormal: zeros
    for (int i = 0; i < kQBlock; ++i) blk(7)[i] *= 3e30f;           // huge but finite
    blk(8)[0] = -std::fabs(blk(8)[0]) - 10.0f;                      // the max is negative
    std::vector<float> buf(x.size() + 1);
    std::copy(x.begin(), x.end(), buf.begin() + 1);  // misaligned rows
    std::vector<BlockA8> ref(static_cast<size_t>(nb));
    tables[0].t->quantize_a8(buf.data() + 1, K, ref.data());
    // NaN elements: their own q is undefined (the scalar cast of NaN), but the others and d must
    // come out as if they were absent.
    auto xn = x;
    for (int64_t b = 0; b < nb; ++b) xn[size_t(b * kQBlock + (b * 7) % kQBlock)] = kNaN;
    std::vector<BlockA8> refn(static_cast<size_t>(nb));
    tables[0].t->quantize_a8(xn.data(), K, refn.data());
    for (const auto& q : tables) {
      std::vector<BlockA8> got(static_cast<size_t>(nb));
      std::memset(got.data(), 0xab, got.size() * sizeof(BlockA8));
      q.t->quantize_a8(buf.data() + 1, K, got.data());
      pass_if(same_bits(got.data(), ref.data(), got.size() * sizeof(BlockA8)),
              q.name + " quantize_a8 K=" + std::to_string(K) + " differs from the scalar blocks");
      q.t->quantize_a8(xn.data(), K, got.data());
      bool ok = true;
      for (int64_t b = 0; b < nb; ++b) {
        ok &= same_bits(&got[size_t(b)].d, &refn[size_t(b)].d, sizeof(float));
        for (int i = 0; i < kQBlock; ++i)
          if (i != (b * 7) % kQBlock) ok &= got[size_t(b)].qs[i] == refn[size_t(b)].qs[i];
      }
      pass_if(ok, q.name + " quantize_a8 with NaN K=" + std::to_string(K) + " differs from the scalar blocks");
    }
  }
}

// The weight quantizer's sum kernels must equal the scalar ones bit for bit.
void test_quant_sums(const std::vector<QuantTable>& tables) {
  Rng rng;
  for (int64_t n : {8, 32, 64, 128, 2080}) {
    auto w = rng.vec(size_t(n), 0.05f);
    w[0] = 0.3f;  // an outlier sets the absmax
    float amax = 0.0f, wmin = w[0], wmax = w[0];
    for (float v : w) {
      amax = std::fmax(amax, std::fabs(v));
      wmin = std::fmin(wmin, v);
      wmax = std::fmax(wmax, v);
    }
    for (const auto& q : tables) {
      bool ok = true;
      for (int lohi : {127, 8}) {
        const float lo = lohi == 127 ? -127.0f : -8.0f, hi = lohi == 127 ? 127.0f : 7.0f;
        for (int i = -10; i <= 12; ++i) {  // the quantizer's candidates, a scale of 0, and clamping
          const float is = i == 12 ? 0.0f : (hi + 0.37f * float(i)) / amax * (i == 11 ? 5.0f : 1.0f);
          double a[2], b[2];
          tables[0].t->quant_sym_sums(w.data(), n, is, lo, hi, &a[0], &b[0]);
          q.t->quant_sym_sums(w.data(), n, is, lo, hi, &a[1], &b[1]);
          ok &= same_bits(&a[0], &a[1], sizeof(double)) && same_bits(&b[0], &b[1], sizeof(double));
        }
      }
      for (int i = -10; i <= 11; ++i) {
        const float is = (15.0f + 0.1f * float(i)) / (wmax - wmin) * (i == 11 ? 3.0f : 1.0f);
        double a[2], b[2], c[2];
        tables[0].t->quant_asym_sums(w.data(), n, wmin, is, &a[0], &b[0], &c[0]);
        q.t->quant_asym_sums(w.data(), n, wmin, is, &a[1], &b[1], &c[1]);
        ok &= same_bits(&a[0], &a[1], sizeof(double)) && same_bits(&b[0], &b[1], sizeof(double)) &&
              same_bits(&c[0], &c[1], sizeof(double));
      }
      pass_if(ok, q.name + " quant_sym_sums / quant_asym_sums n=" + std::to_string(n) + " differ from scalar");
    }
  }
}

// Every row of w dequantized by table t equals the scalar rows bit for bit.
void check_dequant_rows(const QuantKernelTable& sc, const QuantTable& t, const QuantWeight& w, const std::string& tag) {
  std::vector<float> r0(static_cast<size_t>(w.K)), r1(static_cast<size_t>(w.K));
  bool ok = true;
  for (int64_t n = 0; n < w.N; ++n) {
    sc.dequant_row(w, n, r0.data());
    t.t->dequant_row(w, n, r1.data());
    ok &= same_bits(r0.data(), r1.data(), r0.size() * sizeof(float));
  }
  pass_if(ok, t.name + " dequant_row differs from scalar" + tag);
}

// (format, group) pairs; group = K means one scale per row (Q8G only).
struct FormatGroup {
  QuantFormat f;
  int64_t group;  // 0: K
};
const FormatGroup kFormatGroups[] = {
    {QuantFormat::Q8G, 32},  {QuantFormat::Q8G, 64},  {QuantFormat::Q8G, 128},  {QuantFormat::Q8G, 0},
    {QuantFormat::Q4G, 32},  {QuantFormat::Q4G, 64},  {QuantFormat::Q4G, 128},  {QuantFormat::Q4GA, 32},
    {QuantFormat::Q4GA, 64}, {QuantFormat::Q4GA, 128},
};

// The matmuls on quantized random weights: scalar against the double math, every other table
// against scalar, within f32 rounding of the sum of |terms|. Also: the weight quantizer gives the
// same bits with every table's sum kernels, and dequant_row equals the scalar rows.
void test_quant_matmul(const std::vector<QuantTable>& tables) {
  Rng rng;
  const QuantKernelTable& sc = *tables[0].t;
  for (const FormatGroup& fg : kFormatGroups) {
    for (int64_t K : {32, 64, 96, 160, 2080}) {
      const int64_t group = fg.group ? fg.group : K, nb = K / kQBlock;
      for (int64_t N : {1, 7, 8, 13, 40}) {
        const std::string tag = std::string(" ") + fmt_name(fg.f) + " g" + std::to_string(fg.group) +
                                " N=" + std::to_string(N) + " K=" + std::to_string(K);
        auto wf = rng.vec(size_t(N * K), 0.05f);
        for (int64_t k = 0; k < K; ++k) {
          if (N > 1 && k < 128) wf[size_t(K + k)] = 0.0f;  // row 1 starts with an all-zero group
          if (N > 2) wf[size_t(2 * K + k)] += 0.03f;      // row 2 lopsided
        }
        QMat m(fg.f, N, K, group);
        for (int64_t n = 0; n < N; ++n)
          exaone::kernels::quantize_row(sc, wf.data() + n * K, K, group, fg.f, n, m.out());
        const QuantWeight w = m.view();
        for (size_t i = 1; i < tables.size(); ++i) {
          QMat mi(fg.f, N, K, group);
          for (int64_t n = 0; n < N; ++n)
            exaone::kernels::quantize_row(*tables[i].t, wf.data() + n * K, K, group, fg.f, n, mi.out());
          pass_if(mi == m, tables[i].name + " quantize_row gives other bits than scalar" + tag);
          check_dequant_rows(sc, tables[i], w, tag);
        }
        const int64_t Tmax = 9;
        auto x = rng.vec(size_t(Tmax * K));
        for (int64_t t = 0; t < Tmax; ++t)
          for (int64_t k = 0; k < K && k < 64; ++k) x[size_t(t * K + k)] *= 10.0f;  // uneven block scales
        std::vector<BlockA8> xq(size_t(Tmax * nb));
        for (int64_t t = 0; t < Tmax; ++t) sc.quantize_a8(x.data() + t * K, K, xq.data() + t * nb);
        const double tol = 3e-7 * double(nb + 2);
        for (int64_t T : {1, 2, 3, 5, 9}) {
          const std::string tt = tag + " T=" + std::to_string(T);
          std::vector<double> val, mag;
          matmul_double(xq.data(), T, w, val, mag);
          const auto ys = run_matmul(matmul_of(sc, fg.f), xq, T, w, {0, N});
          check_rel("scalar matmul vs double math" + tt, ys, val, mag, tol);
          const std::vector<double> ysd(ys.begin(), ys.end());
          for (size_t i = 1; i < tables.size(); ++i) {
            const auto fn = matmul_of(*tables[i].t, fg.f);
            check_rel(tables[i].name + " matmul" + tt, run_matmul(fn, xq, T, w, {0, N}), ysd, mag, tol);
            if (N > 16 && T == Tmax)  // pieces of whole row tiles, as the thread pool splits rows
              check_rel(tables[i].name + " matmul split rows" + tt, run_matmul(fn, xq, T, w, {0, 8, 24, N}),
                        ysd, mag, tol);
          }
        }
      }
    }
  }
}

// Data that make every float operation exact: scales 0.25 / 0.5 / 1, mins -3 / 0 / 2, activations
// integers with |x| = 127 in every block (so d = 1), sums far below 2^22. Every table must then give
// the scalar output bit for bit, and the scalar one the exact math. Includes the int8 weight -128
// against -127 (the largest int16 pair sums) and int4 rows of 15 against 127.
void test_quant_exact(const std::vector<QuantTable>& tables) {
  Rng rng;
  rng.s = 21;
  const uint16_t scales[3] = {0x3800, 0x3c00, 0x3400}, mins[3] = {0xc200, 0x0000, 0x4000};
  const QuantKernelTable& sc = *tables[0].t;
  for (const FormatGroup& fg : kFormatGroups) {
    for (int64_t K : {32, 96, 160, 288}) {
      const int64_t group = fg.group ? fg.group : K, nb = K / kQBlock;
      for (int64_t N : {1, 7, 8, 19}) {
        const std::string tag = std::string(" ") + fmt_name(fg.f) + " g" + std::to_string(fg.group) +
                                " N=" + std::to_string(N) + " K=" + std::to_string(K);
        QMat m(fg.f, N, K, group);
        const QuantWeight w = m.view();
        for (int64_t n = 0; n < N; ++n)
          for (int64_t k = 0; k < K; ++k) {
            const int c = fg.f == QuantFormat::Q8G ? (n == 0 && k % kQBlock < 8 ? -128 : rng.below(256) - 128)
                                                   : (n == 0 ? 15 : n == 1 ? 0 : rng.below(16));
            exaone::kernels::set_weight_code(w, m.qw.data(), n, k, c);
          }
        for (size_t i = 0; i < m.sc.size(); ++i) m.sc[i] = scales[rng.below(3)];
        for (size_t i = 0; i < m.mn.size(); ++i) m.mn[i] = mins[rng.below(3)];
        const int64_t Tmax = 9;
        std::vector<float> x(size_t(Tmax * K));
        for (auto& v : x) v = float(rng.below(255) - 127);
        for (int64_t t = 0; t < Tmax; ++t)
          for (int64_t b = 0; b < nb; ++b) {  // |x| = 127 somewhere in every block: d = 1
            const int64_t k = b * kQBlock + rng.below(kQBlock);
            x[size_t(t * K + k)] = rng.below(2) ? 127.0f : -127.0f;
          }
        for (int64_t k = 0; k < K; ++k) {
          if (k < kQBlock) x[size_t(k)] = -127.0f;  // token 0, block 0 against row 0's -128s
          x[size_t(K + k)] = 127.0f;                // token 1: the int4 row of 15s at its largest
        }
        std::vector<BlockA8> xq(size_t(Tmax * nb));
        for (int64_t t = 0; t < Tmax; ++t) sc.quantize_a8(x.data() + t * K, K, xq.data() + t * nb);
        bool d_one = true;
        for (const auto& b : xq) d_one &= b.d == 1.0f;
        pass_if(d_one, "exact-data activations do not have d = 1" + tag);
        for (int64_t T : {1, 2, 3, 5, 9}) {
          const std::string tt = tag + " T=" + std::to_string(T);
          std::vector<double> val, mag;
          matmul_double(xq.data(), T, w, val, mag);
          const auto ys = run_matmul(matmul_of(sc, fg.f), xq, T, w, {0, N});
          bool exact = ys.size() == val.size();
          for (size_t i = 0; exact && i < ys.size(); ++i) exact = double(ys[i]) == val[i];
          pass_if(exact, "scalar matmul on exact data is not the exact math" + tt);
          for (size_t i = 1; i < tables.size(); ++i) {
            const auto y = run_matmul(matmul_of(*tables[i].t, fg.f), xq, T, w, {0, N});
            pass_if(y.size() == ys.size() && same_bits(y.data(), ys.data(), ys.size() * sizeof(float)),
                    tables[i].name + " matmul on exact data differs from scalar" + tt);
          }
        }
      }
    }
  }
}

// The K formats (GGUF's K-quants with their two-level scales): random codes and scales; scalar
// against the double math and its own dequant_row, every other table against scalar. exact: data
// that make every float operation exact (d, dmin powers of two, small sub-scales, activations with
// d = 1), where every table must give the scalar output bit for bit.
struct KFormatGroup {
  QuantFormat f;
  int64_t group;
  int code_lo, code_hi;  // codes drawn from [code_lo, code_hi]
};
const KFormatGroup kKFormats[] = {
    {QuantFormat::Q8K, 16, -32, 31},    // Q6_K's values in int8 codes
    {QuantFormat::Q6K, 16, -32, 31},    // Q6_K as stored: 6-bit codes
    {QuantFormat::Q8K, 32, -128, 127},  // IQ4_XS (table values -127..113) and anything int8
    {QuantFormat::Q4KA, 32, 0, 15},     // Q4_K
    {QuantFormat::Q8KA, 32, 0, 63},     // Q5_K (0..31) and up to the 6 bits the kernels allow
};

void fill_kformat(QMat& m, const KFormatGroup& fg, Rng& rng, bool exact) {
  namespace k = exaone::kernels;
  const QuantWeight w = m.view();
  for (int64_t n = 0; n < m.N; ++n)
    for (int64_t c = 0; c < m.K; ++c) {
      int v = fg.code_lo + rng.below(fg.code_hi - fg.code_lo + 1);
      if (n == 0 && c % kQBlock < 4) v = fg.code_lo;  // extremes against |qs| = 127
      if (n == 1 && c % kQBlock < 4) v = fg.code_hi;
      k::set_weight_code(w, m.qw.data(), n, c, v);
    }
  const bool min = k::traits(fg.f).has_min;
  const uint16_t exact_d[3] = {0x3400, 0x3800, 0x3c00};  // 0.25, 0.5, 1
  for (int64_t n0 = 0; n0 < m.N; n0 += 8) {
    const k::KScaleTile t = k::kscale_tile(w, n0);
    uint16_t* d = const_cast<uint16_t*>(t.d);
    uint8_t* c = const_cast<uint8_t*>(t.c);
    for (int64_t i = 0; i < w.superblocks() * t.W; ++i) {
      d[i] = exact ? exact_d[rng.below(3)] : k::f32_to_f16_value(0.002f + 0.01f * rng.uniform());
      if (min)
        const_cast<uint16_t*>(t.dmin)[i] = exact ? exact_d[rng.below(3)] : k::f32_to_f16_value(0.001f + 0.003f * rng.uniform());
    }
    for (int64_t i = 0; i < w.groups() * t.W; ++i) {
      const int cv = exact ? rng.below(4) : min ? rng.below(64) : rng.below(64) - 32;
      c[i] = uint8_t(min || exact ? cv : int8_t(cv));
      if (min) const_cast<uint8_t*>(t.mc)[i] = uint8_t(exact ? rng.below(4) : rng.below(64));
    }
  }
}

void test_quant_kformats(const std::vector<QuantTable>& tables) {
  Rng rng;
  rng.s = 33;
  const QuantKernelTable& sc = *tables[0].t;
  for (const KFormatGroup& fg : kKFormats) {
    for (bool exact : {false, true}) {
      // exact data stay exact up to K = 256: Q8KA's all-positive codes against 127s grow the sums fastest
      for (int64_t K : exact ? std::vector<int64_t>{256} : std::vector<int64_t>{256, 768}) {
        const int64_t nb = K / kQBlock;
        for (int64_t N : {1, 7, 8, 13, 40}) {
          const std::string tag = std::string(" ") + fmt_name(fg.f) + " g" + std::to_string(fg.group) +
                                  (exact ? " exact" : "") + " N=" + std::to_string(N) + " K=" + std::to_string(K);
          QMat m(fg.f, N, K, fg.group);
          fill_kformat(m, fg, rng, exact);
          const QuantWeight w = m.view();
          // dequant_row: s * code (- min), per element, against the same helpers in double
          std::vector<float> r0(static_cast<size_t>(K));
          bool deq = true;
          for (int64_t n = 0; n < N; ++n) {
            sc.dequant_row(w, n, r0.data());
            for (int64_t c = 0; c < K; ++c) {
              const int64_t g = c / fg.group;
              const float s = exaone::kernels::kscale_value(w, n, g), mm = exaone::kernels::kmin_value(w, n, g);
              const float want = exaone::kernels::traits(fg.f).has_min
                                     ? s * float(exaone::kernels::weight_code(w, n, c)) - mm
                                     : s * float(exaone::kernels::weight_code(w, n, c));
              deq &= same_bits(&want, &r0[size_t(c)], sizeof(float));
            }
          }
          pass_if(deq, "scalar dequant_row is not (d * c) * code - dmin * mc" + tag);
          for (size_t i = 1; i < tables.size(); ++i) check_dequant_rows(sc, tables[i], w, tag);
          const int64_t Tmax = 9;
          std::vector<float> x(size_t(Tmax * K));
          if (exact) {
            for (auto& v : x) v = float(rng.below(255) - 127);
            for (int64_t t = 0; t < Tmax; ++t)
              for (int64_t b = 0; b < nb; ++b)
                x[size_t(t * K + b * kQBlock + rng.below(kQBlock))] = rng.below(2) ? 127.0f : -127.0f;
          } else {
            x = rng.vec(size_t(Tmax * K));
          }
          for (int64_t c = 0; c < K; ++c) {
            if (c % kQBlock < 4) x[size_t(c)] = -127.0f * (exact ? 1.0f : 0.05f);  // token 0 against row 0's extremes
            x[size_t(K + c)] = 127.0f * (exact ? 1.0f : 0.05f);
          }
          std::vector<BlockA8> xq(size_t(Tmax * nb));
          for (int64_t t = 0; t < Tmax; ++t) sc.quantize_a8(x.data() + t * K, K, xq.data() + t * nb);
          const double tol = 3e-7 * double(2 * nb + 2);
          for (int64_t T : {1, 2, 3, 5, 9}) {
            const std::string tt = tag + " T=" + std::to_string(T);
            std::vector<double> val, mag;
            matmul_double(xq.data(), T, w, val, mag);
            const auto ys = run_matmul(matmul_of(sc, fg.f), xq, T, w, {0, N});
            if (exact) {
              bool same = ys.size() == val.size();
              for (size_t i = 0; same && i < ys.size(); ++i) same = double(ys[i]) == val[i];
              pass_if(same, "scalar matmul on exact data is not the exact math" + tt);
            } else {
              check_rel("scalar matmul vs double math" + tt, ys, val, mag, tol);
            }
            const std::vector<double> ysd(ys.begin(), ys.end());
            for (size_t i = 1; i < tables.size(); ++i) {
              const auto fn = matmul_of(*tables[i].t, fg.f);
              const auto y = run_matmul(fn, xq, T, w, {0, N});
              if (exact)
                pass_if(y.size() == ys.size() && same_bits(y.data(), ys.data(), ys.size() * sizeof(float)),
                        tables[i].name + " matmul on exact data differs from scalar" + tt);
              else
                check_rel(tables[i].name + " matmul" + tt, y, ysd, mag, tol);
              if (N > 16 && T == Tmax)
                check_rel(tables[i].name + " matmul split rows" + tt, run_matmul(fn, xq, T, w, {0, 8, 24, N}),
                          ysd, mag, tol);
            }
          }
        }
      }
    }
  }
}

// quant_active() follows the kernel table: SDOT / VNNI where the CPU has it and the ISA's name allows
// it ("avx2": the plain AVX2 kernels; "avxvnni": AVX-VNNI; "avx512": the best), the baseline otherwise.
void test_quant_dispatch(const std::vector<QuantTable>& tables) {
  namespace k = exaone::kernels;
  for (const auto& name : k::available_isas()) {
    k::set_isa(name);
    const QuantKernelTable* want = tables[0].t;  // the tables are listed best last
    std::vector<std::string> allowed{name};
    if (name == "neon") allowed.push_back("neon-dotprod");
    if (name == "avxvnni") allowed = {"avx2", "avx2-vnni"};
    if (name == "avx512") allowed = {"avx2", "avx2-vnni", "avx2-avx512vnni"};
    for (const auto& q : tables)
      for (const auto& a : allowed)
        if (q.name == a) want = q.t;
    pass_if(&k::quant_active() == want, "with kernels " + name + " quant_active() is " +
                                            quant_name(k::quant_active()) + ", not " + quant_name(*want));
  }
}

}  // namespace

int main() {
  const auto& f = exaone::kernels::cpu_features();
  std::printf("cpu: avx2=%d avxvnni=%d avx512=%d avx512vnni=%d neon=%d dotprod=%d i8mm=%d; kernels:",
              f.avx2, f.avxvnni, f.avx512, f.avx512vnni, f.neon, f.dotprod, f.i8mm);
  for (const auto& name : exaone::kernels::available_isas()) std::printf(" %s", name.c_str());
  const auto qtables = quant_tables();
  std::printf("; quant:");
  for (const auto& q : qtables) std::printf(" %s", q.name.c_str());
  std::printf(" (active: %s)\n", quant_name(exaone::kernels::quant_active()).c_str());
  const KernelTable& ref = exaone::kernels::scalar_table();
  test_table(ref, ref);  // the harness itself: the reference must agree with itself
  for (const auto& name : exaone::kernels::available_isas()) {
    if (name == "scalar") continue;
    exaone::kernels::set_isa(name);
    test_table(exaone::kernels::active(), ref);
  }
  test_quant_activations(qtables);
  test_quant_sums(qtables);
  test_quant_matmul(qtables);
  test_quant_exact(qtables);
  test_quant_kformats(qtables);
  test_quant_dispatch(qtables);
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
