#include "dispatch.h"
#include "quant.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

#if defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
#include <intrin.h>
#define EXAONE_X86 1
#elif defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define EXAONE_X86 1
#elif defined(__aarch64__) || defined(_M_ARM64)
#define EXAONE_ARM64 1
#if defined(__linux__)
#include <sys/auxv.h>
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#endif
#endif

namespace exaone {
namespace kernels {
namespace {

#ifdef EXAONE_X86
void cpuid(int leaf, int sub, unsigned regs[4]) {
#if defined(_MSC_VER)
  int r[4];
  __cpuidex(r, leaf, sub);
  for (int i = 0; i < 4; ++i) regs[i] = unsigned(r[i]);
#else
  __cpuid_count(leaf, sub, regs[0], regs[1], regs[2], regs[3]);
#endif
}

unsigned long long xgetbv0() {
#if defined(_MSC_VER)
  return _xgetbv(0);
#else
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<unsigned long long>(hi) << 32) | lo;
#endif
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#ifdef EXAONE_X86
  unsigned r[4];
  cpuid(0, 0, r);
  const unsigned max_leaf = r[0];
  if (max_leaf < 7) return f;
  cpuid(1, 0, r);
  const bool fma = r[2] & (1u << 12), osxsave = r[2] & (1u << 27), avx = r[2] & (1u << 28),
             f16c = r[2] & (1u << 29);
  if (!(osxsave && avx)) return f;
  if ((xgetbv0() & 0x6) != 0x6) return f;  // XMM and YMM state enabled by the OS
  cpuid(7, 0, r);
  const bool avx2 = r[1] & (1u << 5);
  f.avx2 = avx2 && fma && f16c;
  const unsigned max_sub7 = r[0];
  const bool avx512 = (r[1] & (1u << 16)) && (r[1] & (1u << 30)) && (r[1] & (1u << 31));  // F, BW, VL
  const bool vnni512 = r[2] & (1u << 11);
  f.avx512 = f.avx2 && avx512 && (xgetbv0() & 0xe0) == 0xe0;  // opmask + ZMM state
  f.avx512vnni = f.avx512 && vnni512;
  if (f.avx2 && max_sub7 >= 1) {
    cpuid(7, 1, r);
    f.avxvnni = r[0] & (1u << 4);  // CPUID.(7,1):EAX[4] AVX-VNNI
  }
#elif defined(EXAONE_ARM64)
  f.neon = true;
#if defined(__linux__)
  const unsigned long hwcap = getauxval(AT_HWCAP), hwcap2 = getauxval(AT_HWCAP2);
  f.dotprod = hwcap & (1ul << 20);  // HWCAP_ASIMDDP
  f.i8mm = hwcap2 & (1ul << 13);    // HWCAP2_I8MM
#elif defined(__APPLE__)
  auto has = [](const char* name) {
    int value = 0;
    size_t size = sizeof value;
    return sysctlbyname(name, &value, &size, nullptr, 0) == 0 && value != 0;
  };
  f.dotprod = has("hw.optional.arm.FEAT_DotProd");
  f.i8mm = has("hw.optional.arm.FEAT_I8MM");
#endif
#endif
  return f;
}

const KernelTable* table_by_name(const std::string& name) {
  if (name == "scalar") return &scalar_table();
  if (name == "avx2") return cpu_features().avx2 ? avx2_table() : nullptr;
  if (name == "avxvnni") return quant_avxvnni_table() ? avx2_table() : nullptr;
  if (name == "avx512") return cpu_features().avx512 ? avx512_table() : nullptr;
  if (name == "neon") return cpu_features().neon ? neon_table() : nullptr;
  return nullptr;
}

constexpr const char* kNames[] = {"scalar", "avx2", "avxvnni", "avx512", "neon"};  // best last, per family

std::atomic<const KernelTable*> g_active{nullptr};
std::atomic<IntDot> g_int_dot{IntDot::kBest};
std::atomic<const char*> g_name{nullptr};  // the name the active choice was made by

IntDot int_dot_of(const std::string& name) {
  if (name == "avx2") return IntDot::kPlain;
  if (name == "avxvnni") return IntDot::kAvxVnni;
  return IntDot::kBest;
}

}  // namespace

#ifndef EXAONE_HAVE_AVX2
const KernelTable* avx2_table() { return nullptr; }
#endif
#ifndef EXAONE_HAVE_AVX512
const KernelTable* avx512_table() { return nullptr; }
#endif
#ifndef EXAONE_HAVE_NEON
const KernelTable* neon_table() { return nullptr; }
#endif

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

std::vector<std::string> available_isas() {
  std::vector<std::string> names;
  for (const char* name : kNames)
    if (table_by_name(name)) names.push_back(name);
  return names;
}

void set_isa(const std::string& name) {
  const KernelTable* t = table_by_name(name);
  if (!t) {
    std::string have;
    for (const auto& n : available_isas()) have += (have.empty() ? "" : ", ") + n;
    throw std::invalid_argument("ISA '" + name + "' is not available on this CPU/build (available: " +
                                have + ")");
  }
  const char* literal = kNames[0];
  for (const char* n : kNames)
    if (name == n) literal = n;
  g_int_dot.store(int_dot_of(name));
  g_name.store(literal);
  g_active.store(t);
}

const char* active_name() {
  active();
  return g_name.load(std::memory_order_acquire);
}

IntDot int_dot() { return g_int_dot.load(std::memory_order_acquire); }

const KernelTable& active() {
  const KernelTable* t = g_active.load(std::memory_order_acquire);
  if (t) return *t;
  const char* env = std::getenv("EXAONE_CPU_ISA");
  if (env && *env) {
    set_isa(env);  // throws on a bad value rather than silently running another path
  } else {
    set_isa(available_isas().back());  // the best this CPU runs
  }
  return *g_active.load();
}

}  // namespace kernels
}  // namespace exaone
