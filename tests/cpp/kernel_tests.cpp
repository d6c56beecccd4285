// Every SIMD kernel table this CPU can run, against the scalar reference, in plain C++ so the same
// checks run natively and on aarch64 under qemu (where Python is not available). Sizes sweep the
// tails of every vector width; outputs are pre-filled with NaN so an unwritten element fails.
// Prints one line per failure and ends with "N passed, M failed"; exits non-zero on any failure.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "kernels/dispatch.h"
#include "kernels/kernels.h"

using exaone::kernels::KernelTable;

namespace {

int g_passed = 0, g_failed = 0;

struct Rng {
  uint64_t s = 0x9E3779B97F4A7C15ull;
  float uniform() {  // [-1, 1)
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return float(int32_t(uint32_t(s >> 32))) / 2147483648.0f;
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
    auto r1 = rng.vec(size_t(2 * n)), r2 = r1;
    const auto c = rng.vec(size_t(n)), s = rng.vec(size_t(n));
    t.rope_f32(r1.data(), c.data(), s.data(), n);
    ref.rope_f32(r2.data(), c.data(), s.data(), n);
    check(isa, "rope_f32 half" + tag, r1, r2, 2e-6f);
  }
  // GQA attention over a ring-like slot list (out of order, with a stride between slots)
  for (int64_t G : {1, 2, 4}) {
    for (int64_t D : {1, 3, 8, 9, 16, 17, 32, 64}) {
      for (int64_t n : {1, 2, 7, 8, 9, 33}) {
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
  if (same) {
    ++g_passed;
  } else {
    std::printf("FAIL %s bf16/f16 conversion differs from the reference\n", isa);
    ++g_failed;
  }
}

}  // namespace

int main() {
  const auto& f = exaone::kernels::cpu_features();
  std::printf("cpu: avx2=%d neon=%d dotprod=%d i8mm=%d; kernels:", f.avx2, f.neon, f.dotprod, f.i8mm);
  for (const auto& name : exaone::kernels::available_isas()) std::printf(" %s", name.c_str());
  std::printf("\n");
  const KernelTable& ref = exaone::kernels::scalar_table();
  test_table(ref, ref);  // the harness itself: the reference must agree with itself
  for (const auto& name : exaone::kernels::available_isas()) {
    if (name == "scalar") continue;
    exaone::kernels::set_isa(name);
    test_table(exaone::kernels::active(), ref);
  }
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
