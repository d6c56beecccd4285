// The quantized kernels follow the ISA chosen for every other kernel (CPUID, EXAONE_CPU_ISA or
// set_isa), so one override switches both tables; on x86 the name also says which integer dot
// product may run (int_dot(): "avx2" forces the plain AVX2 kernels even where VNNI exists).
#include "dispatch.h"
#include "quant.h"

namespace exaone {
namespace kernels {

#ifndef EXAONE_HAVE_AVX2
const QuantKernelTable* quant_avx2_table() { return nullptr; }
#endif
#ifndef EXAONE_HAVE_AVXVNNI
const QuantKernelTable* quant_avxvnni_table() { return nullptr; }
#endif
#ifndef EXAONE_HAVE_AVX512VNNI
const QuantKernelTable* quant_avx512vnni_table() { return nullptr; }
#endif
#ifndef EXAONE_HAVE_NEON
const QuantKernelTable* quant_neon_table() { return nullptr; }
const QuantKernelTable* quant_neon_dotprod_table() { return nullptr; }
#endif

const QuantKernelTable& quant_active() {
  const KernelTable& t = active();
  if (&t == avx2_table() || &t == avx512_table()) {  // vpdpbusd where the CPU has it and the name allows
    const IntDot dot = int_dot();
    if (dot == IntDot::kBest)
      if (const QuantKernelTable* q = quant_avx512vnni_table()) return *q;
    if (dot != IntDot::kPlain)
      if (const QuantKernelTable* q = quant_avxvnni_table()) return *q;
    if (const QuantKernelTable* q = quant_avx2_table()) return *q;
  }
  if (&t == neon_table()) {  // SDOT where the CPU has it, else the baseline (e.g. Cortex-A72)
    if (const QuantKernelTable* q = quant_neon_dotprod_table()) return *q;
    if (const QuantKernelTable* q = quant_neon_table()) return *q;
  }
  return quant_scalar_table();
}

}  // namespace kernels
}  // namespace exaone
