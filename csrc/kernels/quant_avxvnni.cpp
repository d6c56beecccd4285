// The quantized matmuls of quant_avx2.cpp with AVX-VNNI's vpdpbusd (4 u8 x s8 products added
// straight into int32, one instruction for AVX2's vpmaddubsw + vpmaddwd + vpaddd). Compiled alone
// with -mavx2 -mfma -mf16c -mavxvnni and picked only when CPUID reports AVX-VNNI (Alder Lake,
// Sapphire Rapids, Zen 5 and later). Integer sums equal the scalar reference's, as in AVX2.
#include <immintrin.h>

#include <cstring>

#include "dispatch.h"
#include "quant.h"

namespace exaone {
namespace kernels {
namespace {

#define EXAONE_QUANT_VNNI 1
#define EXAONE_DPBUSD(acc, u8, s8) _mm256_dpbusd_avx_epi32(acc, u8, s8)
#include "quant_x86_matmul.inc"

}  // namespace

const QuantKernelTable* quant_avxvnni_table() {
  const QuantKernelTable* avx2 = quant_avx2_table();
  if (!avx2 || !cpu_features().avxvnni) return nullptr;
  // Activations and the weight quantizer are AVX2's (they have no dot products); only the
  // matmuls differ.
  static const QuantKernelTable table = {
      "avx2-vnni", avx2->quantize_a8, EXAONE_QUANT_MATMULS, avx2->dequant_row, avx2->quant_sym_sums,
      avx2->quant_asym_sums,
  };
  return &table;
}

}  // namespace kernels
}  // namespace exaone
