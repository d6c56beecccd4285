// The quantized matmuls of quant_avx2.cpp with AVX-512 VNNI's vpdpbusd (EVEX): the same tiles as
// avx2-vnni, but with 32 vector registers each unpacked weight block serves 8 tokens without
// spills, and prefill runs two row tiles per 512-bit vector (tile16 in quant_x86_matmul.inc). Compiled alone with -mavx512f -mavx512bw -mavx512vl -mavx512vnni (plus
// the AVX2 flags) and picked only when CPUID and XCR0 report AVX-512 F/BW/VL/VNNI (Ice Lake,
// Sapphire Rapids, Zen 4 and later). Integer sums equal the scalar reference's.
#include <immintrin.h>

#include <cstring>

#include "dispatch.h"
#include "quant.h"

namespace exaone {
namespace kernels {
namespace {

#define EXAONE_QUANT_VNNI 1
#define EXAONE_QUANT_MT 8
#define EXAONE_QUANT_ZMM 1  // prefill: 16 rows per 512-bit vector
#define EXAONE_DPBUSD(acc, u8, s8) _mm256_dpbusd_epi32(acc, u8, s8)
#include "quant_x86_matmul.inc"

}  // namespace

const QuantKernelTable* quant_avx512vnni_table() {
  const QuantKernelTable* avx2 = quant_avx2_table();
  if (!avx2 || !cpu_features().avx512vnni) return nullptr;
  static const QuantKernelTable table = {
      "avx2-avx512vnni", avx2->quantize_a8, EXAONE_QUANT_MATMULS, avx2->dequant_row, avx2->quant_sym_sums,
      avx2->quant_asym_sums,
  };
  return &table;
}

}  // namespace kernels
}  // namespace exaone
