// Quantized weights (int8 / int4 codes with group-wise scales) and the kernels that multiply them
// with int8-quantized activations. Layouts are described once here and in docs/quantization.md; the
// arrays are exactly what a quantized checkpoint stores, so loading is a memory map.
//
// Formats (N output rows, K inputs, K a multiple of 32, G the group size):
//   Q8G  int8 weights  : qweight int8  [N, K],   w[n,k] = s[n,g] * q          q in [-128, 127]
//   Q4G  int4 symmetric: qweight uint8 [N, K/2], w[n,k] = s[n,g] * (u - 8)    u in [0, 15]
//   Q4GA int4 scale+min: qweight uint8 [N, K/2], w[n,k] = s[n,g] * u + m[n,g] u in [0, 15]
// with g = k / G (G 32, 64, 128 or K), scales s f16 [N, ceil(K/G)] and mins m f16 [N, ceil(K/G)]
// (Q4GA only). When G does not divide K the last group of a row is shorter (still a multiple of 32).
//
// K formats: GGUF's K-quants (and IQ4_XS) with their two-level scales kept as they are, so a GGUF
// file's weights are represented exactly. K is a multiple of 256 (a super-block); per super-block
// j = k / 256 an f16 d (and dmin), per group g = k / G (G 16 or 32) an 8-bit sub-scale c (and min
// code mc); the scale and min are formed in f32 in the order ggml's reference does:
//   Q8K  int8 codes    : qweight int8  [N, K],   w = (d_j * c_g) * q                 c int8, G 16 or 32
//   Q4KA nibbles + min : qweight uint8 [N, K/2], w = (d_j * c_g) * u - dmin_j * mc_g  c, mc uint8, G 32
//   Q8KA uint8 codes   : qweight uint8 [N, K],   w = (d_j * c_g) * u - dmin_j * mc_g  u in [0, 63], G 32
//   Q6K  6-bit codes   : qweight uint8 [N, 3K/4], w = (d_j * c_g) * (u - 32)          c int8, G 16
// (Q6_K -> Q6K, its 6 bits kept; IQ4_XS -> Q8K G32 with q its table value; Q4_K -> Q4KA; Q5_K ->
// Q8KA.) Their scales are one uint8 array [N, kscale_row_bytes()], tiled as below.
//
// Row tiles: the arrays keep those shapes, but rows are stored in tiles of 8 (the last tile holds
// the N % 8 rows left, W = its width), each tile in the same bytes its rows would take row-major,
// interleaved so one 32-byte load holds 4 consecutive k of each of the 8 rows and a SIMD lane
// stays with one row from the first block to the output:
//   int8 codes (Q8G, Q8K, Q8KA): tile bytes [K/4][W][4]:  byte (q, r, i) = q[n0 + r, 4q + i]
//   nibbles (Q4G, Q4GA, Q4KA):   tile bytes [K/8][W][4]:  byte (o, r, i) = u[n0 + r, 8o + i] | u[n0 + r, 8o + 4 + i] << 4
//   6 bits (Q6K): per 32-value block b, 24 W bytes: the low 4 bits of its u as nibbles above (16 W
//     bytes, o = 0..3 within the block), then 2 runs s of 4 W bytes holding the high 2 bits:
//     byte (s, r, i) bits 2o..2o+1 = u[n0 + r, 32b + 8o + 4s + i] >> 4, so one 32-byte load of the
//     nibbles and one of the high bits rebuild the 32 bytes an int8 tile would hold for 4 k
//   scales / mins: tile [G][W]:  element (g, r) = s[n0 + r, g]
//   K scales: tile sections, in order: d f16 [S][W], dmin f16 [S][W] (with a min), c [G][W],
//             mc [G][W] (with a min); S = K / 256
// (n0 = the tile's first row). The *_index helpers below are the reference for these offsets.
//
// Activations are quantized on the fly per block of 32 values (BlockA8): x ≈ d * qs, d = amax/127.
#pragma once
#include <cstdint>

#include "kernels.h"

namespace exaone {
namespace kernels {

constexpr int64_t kQBlock = 32;  // values per quantization block along K

// 32 activations x[i] ≈ d * qs[i], qs in [-127, 127]; sum = Σ qs (Q4G's and the int8 codes' bias
// terms), dsum = d * float(sum) (the min term of the formats with a min) and sum_lo = Σ qs[0..16)
// (the halves of the groups of 16) are made once with the block, not again by every row tile that
// reads it (a SIMD matmul's per-block work is a few dozen instructions: a scalar convert and
// multiply, or a 16-byte sum, per token and block was a tenth of it).
struct BlockA8 {
  float d;
  int32_t sum;
  float dsum;
  int32_t sum_lo;
  int8_t qs[kQBlock];
};
static_assert(sizeof(BlockA8) == 48, "BlockA8 must be 48 bytes: d, sum, dsum, sum_lo, 32 quants");

enum class QuantFormat : int { Q8G = 0, Q4G = 1, Q4GA = 2, Q8K = 3, Q4KA = 4, Q8KA = 5, Q6K = 6 };
constexpr int kNumQuantFormats = 7;
constexpr int64_t kSuperBlock = 256;  // values per K-format super-block

// What each format is, in one place (ggml's type_traits): the binding, the ops and the kernels
// read it instead of testing formats one by one.
struct QuantFormatTraits {
  const char* name;
  int code_bits;     // 8: one code per byte; 4: nibbles; 6: nibbles + 2 high bits (Q6K)
  bool code_signed;  // weight codes are signed: int8 (Q8G, Q8K), u - 32 (Q6K); else uint8 / nibbles
                     // (Q4G subtracts 8 itself)
  bool has_min;      // a min per group (Q4GA, Q4KA, Q8KA)
  bool k_scales;     // two-level scales of the K formats, in QuantWeight::kscales
};
inline constexpr QuantFormatTraits kQuantFormats[kNumQuantFormats] = {
    {"Q8G", 8, true, false, false},  {"Q4G", 4, false, false, false}, {"Q4GA", 4, false, true, false},
    {"Q8K", 8, true, false, true},   {"Q4KA", 4, false, true, true},  {"Q8KA", 8, false, true, true},
    {"Q6K", 6, true, false, true},
};
// Bytes of one 32-value block of a full 8-row tile: 256 (8-bit), 192 (6-bit), 128 (nibbles).
constexpr int64_t tile_block_bytes(QuantFormat f) { return 32 * kQuantFormats[int(f)].code_bits; }
constexpr const QuantFormatTraits& traits(QuantFormat f) { return kQuantFormats[int(f)]; }

// A quantized [N, K] weight matrix as stored (pointers to memory-mapped or owned arrays).
struct QuantWeight {
  QuantFormat format;
  int64_t N, K;
  int64_t group;            // values per scale: 32, 64, 128, or K (per row); K formats: 16 or 32
  const void* qweight;      // 8-bit codes: [N, K]; nibbles: uint8 [N, K / 2]; 6-bit: uint8 [N, 3K / 4]
  const uint16_t* scales;   // f16 [N, groups()] (not K formats)
  const uint16_t* mins;     // f16 [N, groups()] for Q4GA, else null
  const uint8_t* kscales;   // K formats: uint8 [N, kscale_row_bytes()], else null

  int64_t groups() const { return (K + group - 1) / group; }
  int64_t blocks() const { return K / kQBlock; }
  int64_t superblocks() const { return K / kSuperBlock; }
  int64_t row_bytes() const { return K * traits(format).code_bits / 8; }
  int64_t kscale_row_bytes() const {
    return traits(format).has_min ? 4 * superblocks() + 2 * groups() : 2 * superblocks() + groups();
  }
  // First row and width of the row tile holding row n.
  int64_t tile_row0(int64_t n) const { return n & ~int64_t(7); }
  int64_t tile_width(int64_t n) const { return N - tile_row0(n) < 8 ? N - tile_row0(n) : 8; }
};

constexpr int kTileRows = 8;

// Byte of qweight holding weight (n, k): for int4, its nibble is the low one when (k & 4) == 0;
// for 6-bit codes the byte of its low 4 bits (the same nibble rule), qweight_high_index the byte of
// its high 2 bits (bits 2 * ((k & 31) >> 3)).
inline int64_t qweight_index(const QuantWeight& w, int64_t n, int64_t k) {
  const int64_t n0 = w.tile_row0(n), W = w.tile_width(n), r = n - n0;
  const int bits = traits(w.format).code_bits;
  if (bits == 8) return n0 * w.K + (k >> 2) * 4 * W + r * 4 + (k & 3);
  if (bits == 6) return n0 * w.row_bytes() + (k >> 5) * 24 * W + ((k & 31) >> 3) * 4 * W + r * 4 + (k & 3);
  return n0 * (w.K / 2) + (k >> 3) * 4 * W + r * 4 + (k & 3);
}
inline int64_t qweight_high_index(const QuantWeight& w, int64_t n, int64_t k) {
  const int64_t n0 = w.tile_row0(n), W = w.tile_width(n), r = n - n0;
  return n0 * w.row_bytes() + (k >> 5) * 24 * W + 16 * W + ((k >> 2) & 1) * 4 * W + r * 4 + (k & 3);
}

// Element of scales / mins holding group g of row n.
inline int64_t scale_index(const QuantWeight& w, int64_t n, int64_t g) {
  const int64_t n0 = w.tile_row0(n);
  return n0 * w.groups() + g * w.tile_width(n) + (n - n0);
}

// Integer weight (n, k) as stored: an 8-bit code (int8 or uint8 as the format says), the unsigned
// nibble u, or a 6-bit code's u - 32.
inline int weight_code(const QuantWeight& w, int64_t n, int64_t k) {
  const int64_t i = qweight_index(w, n, k);
  const QuantFormatTraits& t = traits(w.format);
  const uint8_t* q = static_cast<const uint8_t*>(w.qweight);
  if (t.code_bits == 8) return t.code_signed ? static_cast<const int8_t*>(w.qweight)[i] : q[i];
  const int u = (k & 4) ? (q[i] >> 4) : (q[i] & 15);
  if (t.code_bits == 4) return u;
  return (u | (((q[qweight_high_index(w, n, k)] >> (2 * ((k & 31) >> 3))) & 3) << 4)) - 32;
}

// Stores code c (as weight_code returns it) at (n, k) of qweight (zeroed before for nibbles and 6-bit
// codes, whose bytes it ORs into).
inline void set_weight_code(const QuantWeight& w, void* qweight, int64_t n, int64_t k, int c) {
  uint8_t* q = static_cast<uint8_t*>(qweight);
  const int bits = traits(w.format).code_bits;
  const int64_t i = qweight_index(w, n, k);
  if (bits == 8) {
    q[i] = uint8_t(c);
    return;
  }
  const int u = bits == 6 ? c + 32 : c;
  q[i] |= uint8_t((u & 15) << ((k & 4) ? 4 : 0));
  if (bits == 6) q[qweight_high_index(w, n, k)] |= uint8_t(((u >> 4) & 3) << (2 * ((k & 31) >> 3)));
}

// The K scales of the row tile starting at n0 (a multiple of 8), as the layout above places them:
// d[j * W + r], dmin[j * W + r], c[g * W + r], mc[g * W + r] for row n0 + r.
struct KScaleTile {
  const uint16_t* d;
  const uint16_t* dmin;  // null without a min
  const uint8_t* c;      // int8 for Q8K, uint8 with a min
  const uint8_t* mc;     // null without a min
  int64_t W;
};
inline KScaleTile kscale_tile(const QuantWeight& w, int64_t n0) {
  const bool min = traits(w.format).has_min;
  const int64_t W = w.tile_width(n0), S = w.superblocks();
  const uint8_t* base = w.kscales + n0 * w.kscale_row_bytes();
  KScaleTile t;
  t.W = W;
  t.d = reinterpret_cast<const uint16_t*>(base);
  t.dmin = min ? t.d + S * W : nullptr;
  t.c = base + (min ? 4 : 2) * S * W;
  t.mc = min ? t.c + w.groups() * W : nullptr;
  return t;
}

// y[t * ldy + n] = Σ_k x[t, k] * w[n, k] for t in [0, T), n in [n0, n1), with x given as T rows
// of K / 32 activation blocks. n0 must be a multiple of 8 (a row tile's first row); n1 a multiple
// of 8 or N.
using QuantMatmulFn = void (*)(const BlockA8* xq, int64_t T, const QuantWeight& w, int64_t n0,
                               int64_t n1, float* y, int64_t ldy);

// Scale (d * c) and the min subtracted (dmin * mc) of group g of row n of a K-format weight, in
// f32 as ggml's reference dequantization forms them (0 for the min of a format without one).
inline float kscale_value(const QuantWeight& w, int64_t n, int64_t g) {
  const KScaleTile t = kscale_tile(w, w.tile_row0(n));
  const int64_t r = n - w.tile_row0(n), j = g * w.group / kSuperBlock;
  const uint8_t c = t.c[g * t.W + r];
  const float cv = traits(w.format).has_min ? float(c) : float(int8_t(c));  // signed without a min
  return f16_to_f32_value(t.d[j * t.W + r]) * cv;
}
inline float kmin_value(const QuantWeight& w, int64_t n, int64_t g) {
  const KScaleTile t = kscale_tile(w, w.tile_row0(n));
  if (!t.mc) return 0.0f;
  const int64_t r = n - w.tile_row0(n), j = g * w.group / kSuperBlock;
  return f16_to_f32_value(t.dmin[j * t.W + r]) * float(t.mc[g * t.W + r]);
}

struct QuantKernelTable {
  const char* name;
  // x[K] (K a multiple of 32) -> K / 32 blocks. Every variant gives the same blocks bit for bit.
  void (*quantize_a8)(const float* x, int64_t K, BlockA8* out);
  QuantMatmulFn matmul[kNumQuantFormats];  // by QuantFormat: matmul_q8g_a8, ..., matmul_q8ka_a8
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
