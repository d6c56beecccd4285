// The quantized kernels follow the ISA chosen for every other kernel (CPUID, EXAONE_CPU_ISA or
// set_isa), so one override switches both tables.
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
  if (&t == avx2_table() || &t == avx512_table()) {  // vpdpbusd where the CPU has it
    if (const QuantKernelTable* q = quant_avx512vnni_table()) return *q;
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
