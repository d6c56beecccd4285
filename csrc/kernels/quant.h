// Quantized weights (int8 / int4, group-wise f16 scales) and the kernels that multiply them with
// int8-quantized activations. Layouts are described once here and in docs/quantization.md; the
// arrays are exactly what a quantized checkpoint stores, so loading is a memory map.
//
// Formats (N output rows, K inputs, K a multiple of 32, G the group size: 32, 64, 128 or K):
//   Q8G  int8 weights  : qweight int8  [N, K],   w[n,k] = s[n,g] * q          q in [-127, 127]
//   Q4G  int4 symmetric: qweight uint8 [N, K/2], w[n,k] = s[n,g] * (u - 8)    u in [0, 15]
//   Q4GA int4 scale+min: qweight uint8 [N, K/2], w[n,k] = s[n,g] * u + m[n,g] u in [0, 15]
// with g = k / G, scales s f16 [N, ceil(K/G)] and mins m f16 [N, ceil(K/G)] (Q4GA only). When G
// does not divide K the last group of a row is shorter (still a multiple of 32).
//
// Row tiles: the arrays keep those shapes, but rows are stored in tiles of 8 (the last tile holds
// the N % 8 rows left, W = its width), each tile in the same bytes its rows would take row-major,
// interleaved so one 32-byte load holds 4 consecutive k of each of the 8 rows and a SIMD lane
// stays with one row from the first block to the output:
//   Q8G : tile bytes [K/4][W][4]:  byte (q, r, i)      = q[n0 + r, 4q + i]
//   Q4G*: tile bytes [K/8][W][4]:  byte (o, r, i)      = u[n0 + r, 8o + i] | u[n0 + r, 8o + 4 + i] << 4
//   scales / mins: tile [G][W]:    element (g, r)      = s[n0 + r, g]
// (n0 = the tile's first row). The *_index helpers below are the reference for these offsets.
//
// Activations are quantized on the fly per block of 32 values (BlockA8): x ≈ d * qs, d = amax/127.
#pragma once
#include <cstdint>

#include "kernels.h"

namespace exaone {
namespace kernels {

constexpr int64_t kQBlock = 32;  // values per quantization block along K

// 32 activations x[i] ≈ d * qs[i], qs in [-127, 127]; sum = Σ qs (used by the Q4GA min term).
struct BlockA8 {
  float d;
  int32_t sum;
  int8_t qs[kQBlock];
};
static_assert(sizeof(BlockA8) == 40, "BlockA8 must be 40 bytes: d, sum, 32 quants");

enum class QuantFormat : int { Q8G = 0, Q4G = 1, Q4GA = 2 };

// A quantized [N, K] weight matrix as stored (pointers to memory-mapped or owned arrays).
struct QuantWeight {
  QuantFormat format;
  int64_t N, K;
  int64_t group;           // values per scale: 32, 64, 128, or K (per row)
  const void* qweight;     // Q8G: int8 [N, K]; Q4G / Q4GA: uint8 [N, K / 2]
  const uint16_t* scales;  // f16 [N, groups()]
  const uint16_t* mins;    // f16 [N, groups()] for Q4GA, else null

  int64_t groups() const { return (K + group - 1) / group; }
  int64_t blocks() const { return K / kQBlock; }
  int64_t row_bytes() const { return format == QuantFormat::Q8G ? K : K / 2; }
  // First row and width of the row tile holding row n.
  int64_t tile_row0(int64_t n) const { return n & ~int64_t(7); }
  int64_t tile_width(int64_t n) const { return N - tile_row0(n) < 8 ? N - tile_row0(n) : 8; }
};

constexpr int kTileRows = 8;

// Byte of qweight holding weight (n, k): for int4, its nibble is the low one when (k & 4) == 0.
inline int64_t qweight_index(const QuantWeight& w, int64_t n, int64_t k) {
  const int64_t n0 = w.tile_row0(n), W = w.tile_width(n), r = n - n0;
  if (w.format == QuantFormat::Q8G) return n0 * w.K + (k >> 2) * 4 * W + r * 4 + (k & 3);
  return n0 * (w.K / 2) + (k >> 3) * 4 * W + r * 4 + (k & 3);
}

// Element of scales / mins holding group g of row n.
inline int64_t scale_index(const QuantWeight& w, int64_t n, int64_t g) {
  const int64_t n0 = w.tile_row0(n);
  return n0 * w.groups() + g * w.tile_width(n) + (n - n0);
}

// Integer weight (n, k) as stored: q (Q8G) or the unsigned nibble u (Q4G / Q4GA).
inline int weight_code(const QuantWeight& w, int64_t n, int64_t k) {
  const int64_t i = qweight_index(w, n, k);
  if (w.format == QuantFormat::Q8G) return static_cast<const int8_t*>(w.qweight)[i];
  const uint8_t b = static_cast<const uint8_t*>(w.qweight)[i];
  return (k & 4) ? (b >> 4) : (b & 15);
}

// y[t * ldy + n] = Σ_k x[t, k] * w[n, k] for t in [0, T), n in [n0, n1), with x given as T rows
// of K / 32 activation blocks. n0 must be a multiple of 8 (a row tile's first row); n1 a multiple
// of 8 or N.
using QuantMatmulFn = void (*)(const BlockA8* xq, int64_t T, const QuantWeight& w, int64_t n0,
                               int64_t n1, float* y, int64_t ldy);

struct QuantKernelTable {
  const char* name;
  // x[K] (K a multiple of 32) -> K / 32 blocks. Every variant gives the same blocks bit for bit.
  void (*quantize_a8)(const float* x, int64_t K, BlockA8* out);
  QuantMatmulFn matmul_q8g_a8;
  QuantMatmulFn matmul_q4g_a8;
  QuantMatmulFn matmul_q4ga_a8;
  // out[K] = row n of w, dequantized to f32.
  void (*dequant_row)(const QuantWeight& w, int64_t n, float* out);
  // The weight quantizer's inner loops over one group (n a multiple of 8), in 8 float partial
  // sums, lane j taking elements j, j + 8, ..., added lane by lane in double at the end, so every
  // variant gives the same sums and the same quantized checkpoint.
  //   sym:  q = clamp(round(w * is), lo, hi):          Σ w q, Σ q q
  //   asym: u = clamp(round((w - lo) * is), 0, 15):    Σ u, Σ u u, Σ u w
  void (*quant_sym_sums)(const float* w, int64_t n, float is, float lo, float hi, double* swq, double* sqq);
  void (*quant_asym_sums)(const float* w, int64_t n, float lo, float is, double* su, double* suu,
                          double* suw);
};

const QuantKernelTable& quant_scalar_table();
const QuantKernelTable* quant_avx2_table();  // null when built without AVX2
// AVX2 with the AVX-VNNI dot product (vpdpbusd) in the matmuls; null unless built in and this CPU
// has AVX-VNNI. Named "avx2-vnni".
const QuantKernelTable* quant_avxvnni_table();
// The same with AVX-512 VNNI on 256-bit vectors (32 registers, 8 tokens per pass); null unless
// built in and this CPU has AVX-512 F/BW/VL/VNNI. Named "avx2-avx512vnni".
const QuantKernelTable* quant_avx512vnni_table();
// aarch64 (null elsewhere): baseline NEON, and the variant whose matmuls use the ARMv8.2 dot-product
// instruction, null unless the build can emit it and this CPU runs it. Both are named "neon".
const QuantKernelTable* quant_neon_table();
const QuantKernelTable* quant_neon_dotprod_table();
// The table matching the active kernel table (kernels::active(), so set_isa applies here too).
const QuantKernelTable& quant_active();

// Weight quantizer (one row; ops::quantize_weight threads it over rows). Portable code around the
// table's sum kernels.
// Quantizes one row (f32 [K]) into row n of the outputs, choosing per group the scale (and min)
// with the least squared error among candidates around absmax, the absmax scale itself included,
// then rounding every weight to its nearest level under the chosen f16 scale. All-zero groups get
// scale 0 and zero weights. Throws std::invalid_argument on a non-finite weight or a scale / min
// beyond the f16 range.
struct QuantOut {
  int64_t N;         // rows of the whole matrix (the row tiles depend on it)
  void* qweight;     // int8 [N, K] or uint8 [N, K / 2]
  uint16_t* scales;  // f16 [N, groups]
  uint16_t* mins;    // f16 [N, groups] for Q4GA, else null
};
void quantize_row(const QuantKernelTable& kt, const float* w, int64_t K, int64_t group,
                  QuantFormat format, int64_t n, const QuantOut& out);

// IEEE half conversions (round to nearest even), shared by the quantizer and reference kernels.

}  // namespace kernels
}  // namespace exaone
