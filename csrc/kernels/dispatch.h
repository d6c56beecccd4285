// Which kernel table runs: detected once from CPUID, overridable by EXAONE_CPU_ISA or set_isa().
#pragma once
#include <string>
#include <vector>

#include "kernels.h"

namespace exaone {
namespace kernels {

struct CpuFeatures {
  bool avx2 = false;     // x86: AVX2 + FMA + F16C, with the OS saving YMM state
  bool avxvnni = false;  // x86: AVX-VNNI (VEX vpdpbusd), on top of avx2
  bool avx512 = false;      // x86: AVX-512 F/BW/VL with the OS saving ZMM and mask state
  bool avx512vnni = false;  // x86: AVX-512 F/BW/VL/VNNI with the OS saving ZMM and mask state
  bool neon = false;     // aarch64: Advanced SIMD (always there on ARMv8-A)
  bool dotprod = false;  // aarch64: SDOT/UDOT (ARMv8.2 dotprod)
  bool i8mm = false;     // aarch64: SMMLA (ARMv8.6 i8mm)
};

const CpuFeatures& cpu_features();
// The table every op uses. Its first call applies EXAONE_CPU_ISA (invalid values throw).
const KernelTable& active();
// ISA names this build has and this CPU runs, best last. On x86 a name also fixes which integer
// (int8/int4) kernels run beside the float table: "avx2" the plain AVX2 ones (maddubs), as an
// AVX2-only laptop runs them; "avxvnni" AVX2 floats with AVX-VNNI integer dot products; "avx512"
// (and the automatic choice) the best dot product the CPU has.
std::vector<std::string> available_isas();
// Selects a table by name; throws std::invalid_argument for unknown or unsupported names.
void set_isa(const std::string& name);
// The name of the active choice (one of available_isas()).
const char* active_name();

// Which x86 integer dot product the quantized kernels may use beside the active float table.
enum class IntDot { kPlain, kAvxVnni, kBest };
IntDot int_dot();

}  // namespace kernels
}  // namespace exaone
