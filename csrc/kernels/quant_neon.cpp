// NEON variants of the quantized kernels (quant.h) for aarch64, in two tables: baseline ARMv8-A
// (what a Raspberry Pi 4's Cortex-A72 runs) and one whose matmuls use the ARMv8.2 dot-product
// instruction SDOT, handed out only when the CPU has it. The file is compiled for baseline ARMv8-A
// (with -ffp-contract=off); only functions marked EXAONE_DOTPROD may contain SDOT, and everything
// has internal linkage, so no SDOT reaches a path a CPU without it runs.
//
// The row tiles of quant.h put 4 consecutive k of 4 rows in one 16-byte load (int8; as nibbles,
// 8 k), so the two halves of a tile's 32-byte step feed rows 0-3 and 4-7 and lane r of every sum
// belongs to one row: no horizontal reductions, as in the AVX2 file.
//   SDOT by element: vdotq_laneq_s32(acc, w, a, j) adds to lane r the 4-k dot of row r against
//   activation bytes 4j..4j+3. Nibbles u (0..15) are valid signed bytes as they are; Q4G then
//   subtracts 8 * Σ q_x in int32.
//   Baseline: SMULL / SMLAL multiply the weights by 4 activation bytes repeated, giving int16
//   products per (row, k mod 4); SADALP widens pairs into int32 and a final ADDP folds each row's
//   two lanes. A product is at most 128 * 127 = 16256 (weight -128, |qs| <= 127), so int8 weights
//   add two per int16 lane (<= 32512) before widening; nibbles (<= 15 * 127) add a whole block's 8.
// Every block's integer sum equals the scalar reference's; only the f32 accumulation order (and
// FMA) differs.
#include <arm_neon.h>

#include <cstring>

#include "dispatch.h"
#include "quant.h"

// SDOT intrinsics inside functions given the target: GCC's arm_neon.h allows that for
// arch=armv8.2-a+dotprod, clang's from version 16 on; older clang only when the whole build
// targets dotprod. MSVC gets the baseline table only.
#if defined(__ARM_FEATURE_DOTPROD)
#define EXAONE_QUANT_SDOT 1
#define EXAONE_DOTPROD
#elif defined(__clang__) && __clang_major__ >= 16
#define EXAONE_QUANT_SDOT 1
#define EXAONE_DOTPROD __attribute__((target("dotprod")))
#elif defined(__GNUC__) && !defined(__clang__)
#define EXAONE_QUANT_SDOT 1
#define EXAONE_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
#endif

namespace exaone {
namespace kernels {
namespace {

// 4 activation bytes repeated over 16: the same 4 k for each of 4 rows.
inline int8x16_t dup4(const int8_t* a) {
  int32_t v;
  std::memcpy(&v, a, 4);
  return vreinterpretq_s8_s32(vdupq_n_s32(v));
}

inline float32x4_t load_f16x4(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }

// ---- activations ------------------------------------------------------------------------------

void quantize_a8(const float* x, int64_t K, BlockA8* out) {
  for (int64_t b = 0; b < K / kQBlock; ++b) {
    const float* xb = x + b * kQBlock;
    float32x4_t v[8];
    for (int i = 0; i < 8; ++i) v[i] = vld1q_f32(xb + 4 * i);
    // |v| > m ? |v| : m keeps m when |v| is NaN, as the scalar loop ignores NaN (vmaxq would
    // propagate it); the lanes then hold no NaN, so vmaxvq is safe.
    float32x4_t m = vdupq_n_f32(0.0f);
    for (int i = 0; i < 8; ++i) {
      const float32x4_t a = vabsq_f32(v[i]);
      m = vbslq_f32(vcgtq_f32(a, m), a, m);
    }
    const float amax = vmaxvq_f32(m);
    BlockA8& o = out[b];
    const bool zero = !(amax >= 1e-30f);
    o.d = zero ? 0.0f : amax / 127.0f;
    const float32x4_t id = vdupq_n_f32(zero ? 0.0f : 1.0f / o.d);
    int32x4_t q[8];
    for (int i = 0; i < 8; ++i) q[i] = vcvtnq_s32_f32(vmulq_f32(v[i], id));  // nearest even
    const int32x4_t s_lo = vaddq_s32(vaddq_s32(q[0], q[1]), vaddq_s32(q[2], q[3]));
    o.sum_lo = vaddvq_s32(s_lo);
    o.sum = vaddvq_s32(vaddq_s32(s_lo, vaddq_s32(vaddq_s32(q[4], q[5]), vaddq_s32(q[6], q[7]))));
    o.dsum = o.d * float(o.sum);
    // |q| <= 127: narrowing keeps the low bytes, as the scalar int8_t cast does.
    for (int h = 0; h < 2; ++h) {
      const int16x8_t q01 = vcombine_s16(vmovn_s32(q[4 * h]), vmovn_s32(q[4 * h + 1]));
      const int16x8_t q23 = vcombine_s16(vmovn_s32(q[4 * h + 2]), vmovn_s32(q[4 * h + 3]));
      vst1q_s8(o.qs + 16 * h, vcombine_s8(vmovn_s16(q01), vmovn_s16(q23)));
    }
  }
}

// ---- matmul -------------------------------------------------------------------------------------

// Bytes j (rows 4j..4j+3) of load q (k 4q..4q+3) of a block at p as signed 8-bit codes: an 8-bit
// tile's own bytes, or a 6-bit block's u - 32 rebuilt from nibble run q / 2 and bits 2 (q / 2).. of
// high-bit run q % 2 (quant.h). q is a constant once the callers' loops are unrolled.
template <QuantFormat F>
inline int8x16_t codes16(const uint8_t* p, int q, int j) {
  if constexpr (F == QuantFormat::Q6K) {
    const uint8x16_t nib = vld1q_u8(p + 32 * (q >> 1) + 16 * j), hb = vld1q_u8(p + 128 + 32 * (q & 1) + 16 * j);
    const uint8x16_t lo = (q & 1) ? vshrq_n_u8(nib, 4) : vandq_u8(nib, vdupq_n_u8(15));
    const int o = q >> 1;
    const uint8x16_t h = o == 0 ? vshlq_n_u8(hb, 4) : o == 1 ? vshlq_n_u8(hb, 2) : o == 2 ? hb : vshrq_n_u8(hb, 2);
    return vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lo, vandq_u8(h, vdupq_n_u8(0x30)))), vdupq_n_s8(32));
  } else {
    return vld1q_s8(reinterpret_cast<const int8_t*>(p + 32 * q + 16 * j));
  }
}

// Block sums: isum[i][0] holds rows 0-3 and isum[i][1] rows 4-7 of a full row tile against token
// i's activation block xb[i]: Σ_k q[r, k] * qs_i[k], with q the signed weight (Q8G; Q4G as u - 8) or
// the unsigned nibble u (Q4GA). p is the block's 128 (int4) or 256 (int8) bytes in the tile.
struct Baseline {
  // Half -1: the whole block; 0 / 1: only k 0-15 / 16-31 (8- and 6-bit codes, for groups of 16).
  // 8-bit codes are multiplied as signed bytes: Q8KA's unsigned codes (<= 63) are the same values;
  // 6-bit codes as u - 32.
  template <QuantFormat F, int MT, int Half = -1>
  static inline void block_dot(const uint8_t* p, const BlockA8* const* xb, int32x4_t (*isum)[2]) {
    if constexpr (traits(F).code_bits != 4) {
      // acc[i][j]: rows 2j and 2j + 1, two lanes (k mod 4 in pairs) each.
      int32x4_t acc[MT][4];
      for (int i = 0; i < MT; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] = vdupq_n_s32(0);
      for (int q = Half < 0 ? 0 : 4 * Half; q < (Half < 0 ? 8 : 4 * Half + 4); q += 2) {  // two 32-byte steps: 8 k of 8 rows
        const int8x16_t w0 = codes16<F>(p, q, 0), w1 = codes16<F>(p, q, 1);          // step q: rows 0-3, 4-7
        const int8x16_t w2 = codes16<F>(p, q + 1, 0), w3 = codes16<F>(p, q + 1, 1);  // step q + 1
        for (int i = 0; i < MT; ++i) {
          const int8x16_t a0 = dup4(xb[i]->qs + 4 * q), a1 = dup4(xb[i]->qs + 4 * q + 4);
          const int8x8_t a0l = vget_low_s8(a0), a1l = vget_low_s8(a1);
          acc[i][0] = vpadalq_s16(acc[i][0], vmlal_s8(vmull_s8(vget_low_s8(w0), a0l), vget_low_s8(w2), a1l));
          acc[i][1] = vpadalq_s16(acc[i][1], vmlal_high_s8(vmull_high_s8(w0, a0), w2, a1));
          acc[i][2] = vpadalq_s16(acc[i][2], vmlal_s8(vmull_s8(vget_low_s8(w1), a0l), vget_low_s8(w3), a1l));
          acc[i][3] = vpadalq_s16(acc[i][3], vmlal_high_s8(vmull_high_s8(w1, a0), w3, a1));
        }
      }
      for (int i = 0; i < MT; ++i) {
        isum[i][0] = vpaddq_s32(acc[i][0], acc[i][1]);
        isum[i][1] = vpaddq_s32(acc[i][2], acc[i][3]);
      }
    } else {
      const uint8x16_t m4 = vdupq_n_u8(0x0f);
      int16x8_t acc[MT][4];  // as for int8, but int16 holds the whole block (8 * 15 * 127 = 15240)
      for (int i = 0; i < MT; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] = vdupq_n_s16(0);
      for (int o = 0; o < 4; ++o) {  // 8 k of 8 rows per 32 bytes: k 0-3 low nibbles, k 4-7 high
        const uint8x16_t r0 = vld1q_u8(p + 32 * o), r1 = vld1q_u8(p + 32 * o + 16);
        const int8x16_t l0 = vreinterpretq_s8_u8(vandq_u8(r0, m4)), h0 = vreinterpretq_s8_u8(vshrq_n_u8(r0, 4));
        const int8x16_t l1 = vreinterpretq_s8_u8(vandq_u8(r1, m4)), h1 = vreinterpretq_s8_u8(vshrq_n_u8(r1, 4));
        for (int i = 0; i < MT; ++i) {
          const int8x16_t a0 = dup4(xb[i]->qs + 8 * o), a1 = dup4(xb[i]->qs + 8 * o + 4);
          const int8x8_t a0l = vget_low_s8(a0), a1l = vget_low_s8(a1);
          acc[i][0] = vmlal_s8(vmlal_s8(acc[i][0], vget_low_s8(l0), a0l), vget_low_s8(h0), a1l);
          acc[i][1] = vmlal_high_s8(vmlal_high_s8(acc[i][1], l0, a0), h0, a1);
          acc[i][2] = vmlal_s8(vmlal_s8(acc[i][2], vget_low_s8(l1), a0l), vget_low_s8(h1), a1l);
          acc[i][3] = vmlal_high_s8(vmlal_high_s8(acc[i][3], l1, a0), h1, a1);
        }
      }
      for (int i = 0; i < MT; ++i) {
        isum[i][0] = vpaddq_s32(vpaddlq_s16(acc[i][0]), vpaddlq_s16(acc[i][1]));
        isum[i][1] = vpaddq_s32(vpaddlq_s16(acc[i][2]), vpaddlq_s16(acc[i][3]));
        if constexpr (F == QuantFormat::Q4G) {  // Σ (u - 8) q = Σ u q - 8 Σ q
          const int32x4_t s8 = vdupq_n_s32(8 * xb[i]->sum);
          isum[i][0] = vsubq_s32(isum[i][0], s8);
          isum[i][1] = vsubq_s32(isum[i][1], s8);
        }
      }
    }
  }
};

#ifdef EXAONE_QUANT_SDOT
struct Sdot {
  template <QuantFormat F, int MT, int Half = -1>
  EXAONE_DOTPROD static inline void block_dot(const uint8_t* p, const BlockA8* const* xb,
                                              int32x4_t (*isum)[2]) {
    int32x4_t lo[MT], hi[MT];  // rows 0-3, rows 4-7
    for (int i = 0; i < MT; ++i) lo[i] = hi[i] = vdupq_n_s32(0);
    // Each half of the block's activations (16 bytes, 4 lanes of 4 k) meets the weights of 16 k.
    for (int h = Half < 0 ? 0 : Half; h < (Half < 0 ? 2 : Half + 1); ++h) {
      if constexpr (traits(F).code_bits != 4) {  // 4 steps of 4 k: lane j is step j
        int8x16_t wv[8];
        for (int j = 0; j < 8; ++j) wv[j] = codes16<F>(p, 4 * h + j / 2, j % 2);
        for (int i = 0; i < MT; ++i) {
          const int8x16_t a = vld1q_s8(xb[i]->qs + 16 * h);
          lo[i] = vdotq_laneq_s32(lo[i], wv[0], a, 0);
          hi[i] = vdotq_laneq_s32(hi[i], wv[1], a, 0);
          lo[i] = vdotq_laneq_s32(lo[i], wv[2], a, 1);
          hi[i] = vdotq_laneq_s32(hi[i], wv[3], a, 1);
          lo[i] = vdotq_laneq_s32(lo[i], wv[4], a, 2);
          hi[i] = vdotq_laneq_s32(hi[i], wv[5], a, 2);
          lo[i] = vdotq_laneq_s32(lo[i], wv[6], a, 3);
          hi[i] = vdotq_laneq_s32(hi[i], wv[7], a, 3);
        }
      } else {  // 2 steps of 8 k: low nibbles meet lane 2j, high nibbles lane 2j + 1
        const uint8x16_t m4 = vdupq_n_u8(0x0f);
        int8x16_t l[4], u[4];  // step j: rows 0-3 at 2j, rows 4-7 at 2j + 1
        for (int j = 0; j < 4; ++j) {
          const uint8x16_t r = vld1q_u8(p + 64 * h + 16 * j);
          l[j] = vreinterpretq_s8_u8(vandq_u8(r, m4));
          u[j] = vreinterpretq_s8_u8(vshrq_n_u8(r, 4));
        }
        for (int i = 0; i < MT; ++i) {
          const int8x16_t a = vld1q_s8(xb[i]->qs + 16 * h);
          lo[i] = vdotq_laneq_s32(lo[i], l[0], a, 0);
          lo[i] = vdotq_laneq_s32(lo[i], u[0], a, 1);
          hi[i] = vdotq_laneq_s32(hi[i], l[1], a, 0);
          hi[i] = vdotq_laneq_s32(hi[i], u[1], a, 1);
          lo[i] = vdotq_laneq_s32(lo[i], l[2], a, 2);
          lo[i] = vdotq_laneq_s32(lo[i], u[2], a, 3);
          hi[i] = vdotq_laneq_s32(hi[i], l[3], a, 2);
          hi[i] = vdotq_laneq_s32(hi[i], u[3], a, 3);
        }
      }
    }
    for (int i = 0; i < MT; ++i) {
      if constexpr (F == QuantFormat::Q4G) {  // Σ (u - 8) q = Σ u q - 8 Σ q
        const int32x4_t s8 = vdupq_n_s32(8 * xb[i]->sum);
        lo[i] = vsubq_s32(lo[i], s8);
        hi[i] = vsubq_s32(hi[i], s8);
      }
      isum[i][0] = lo[i];
      isum[i][1] = hi[i];
    }
  }
};
#endif

// y[i][0..8) = the 8 rows of the full row tile starting at n0 against token i (x[i]: its K / 32
// blocks): acc += isum_b * (s_g * d_b) [+ m_g * (d_b * sum_b) for Q4GA], one lane per row.
#ifndef EXAONE_QPF
#define EXAONE_QPF 512
#endif
constexpr int64_t kPrefetchDistance = EXAONE_QPF;

template <QuantFormat F, int MT, class Dot>
void tile8(const BlockA8* const* x, const QuantWeight& w, int64_t n0, float* const* y) {
  const int64_t nb = w.blocks(), G = w.groups(), bpg = w.group / kQBlock;
  const int64_t block_bytes = F == QuantFormat::Q8G ? 256 : 128;
  const uint8_t* tile = static_cast<const uint8_t*>(w.qweight) + n0 * w.row_bytes();
  const uint16_t* st = w.scales + n0 * G;
  const uint16_t* mt = F == QuantFormat::Q4GA ? w.mins + n0 * G : nullptr;
  float32x4_t acc[MT][2];
  for (int i = 0; i < MT; ++i) acc[i][0] = acc[i][1] = vdupq_n_f32(0.0f);
  for (int64_t g = 0; g < G; ++g) {
    const float32x4_t s0 = load_f16x4(st + 8 * g), s1 = load_f16x4(st + 8 * g + 4);
    float32x4_t m0 = vdupq_n_f32(0.0f), m1 = m0;
    if constexpr (F == QuantFormat::Q4GA) {
      m0 = load_f16x4(mt + 8 * g);
      m1 = load_f16x4(mt + 8 * g + 4);
    }
    const int64_t b1 = (g + 1) * bpg < nb ? (g + 1) * bpg : nb;
    for (int64_t b = g * bpg; b < b1; ++b) {
      const uint8_t* p = tile + b * block_bytes;
#if defined(__GNUC__)
      if constexpr (MT == 1)  // decode streams the tile once: keep the next lines on their way
        for (int64_t l = 0; l < block_bytes; l += 64) __builtin_prefetch(p + kPrefetchDistance + l, 0, 3);
#endif
      const BlockA8* xb[MT];
      for (int i = 0; i < MT; ++i) xb[i] = x[i] + b;
      int32x4_t isum[MT][2];
      Dot::template block_dot<F, MT>(p, xb, isum);
      for (int i = 0; i < MT; ++i) {
        const float d = xb[i]->d;
        acc[i][0] = vfmaq_f32(acc[i][0], vcvtq_f32_s32(isum[i][0]), vmulq_n_f32(s0, d));
        acc[i][1] = vfmaq_f32(acc[i][1], vcvtq_f32_s32(isum[i][1]), vmulq_n_f32(s1, d));
        if constexpr (F == QuantFormat::Q4GA) {
          const float ds = xb[i]->dsum;
          acc[i][0] = vfmaq_n_f32(acc[i][0], m0, ds);
          acc[i][1] = vfmaq_n_f32(acc[i][1], m1, ds);
        }
      }
    }
  }
  for (int i = 0; i < MT; ++i) {
    vst1q_f32(y[i], acc[i][0]);
    vst1q_f32(y[i] + 4, acc[i][1]);
  }
}

// 8 sub-scales (int8 for Q8K, uint8 with a min) as two f32 x4: rows 0-3 and 4-7.
template <bool Signed>
inline void cvt8x8(const uint8_t* p, float32x4_t* lo, float32x4_t* hi) {
  const int16x8_t v = Signed ? vmovl_s8(vld1_s8(reinterpret_cast<const int8_t*>(p)))
                             : vreinterpretq_s16_u16(vmovl_u8(vld1_u8(p)));
  *lo = vcvtq_f32_s32(vmovl_s16(vget_low_s16(v)));
  *hi = vcvtq_f32_s32(vmovl_high_s16(v));
}

// The K formats' tile8. Within a super-block the d (and dmin) of a row are common, so the groups
// accumulate isum * (c * d_b) (and mc * d_b * sum_b) apart and are scaled by d (and dmin) once per
// super-block: acc += d * Σ_g isum_g c_g d_b - dmin * Σ_g mc_g d_b sum_b.
template <QuantFormat F, int MT, class Dot, bool Halves>
void tile8_k(const BlockA8* const* x, const QuantWeight& w, int64_t n0, float* const* y) {
  constexpr bool kMin = traits(F).has_min, kSigned = !kMin;
  const int64_t S = w.superblocks();
  const int64_t block_bytes = tile_block_bytes(F);
  const uint8_t* tile = static_cast<const uint8_t*>(w.qweight) + n0 * w.row_bytes();
  const KScaleTile ks = kscale_tile(w, n0);
  float32x4_t acc[MT][2];
  for (int i = 0; i < MT; ++i) acc[i][0] = acc[i][1] = vdupq_n_f32(0.0f);
  for (int64_t j = 0; j < S; ++j) {
    float32x4_t sj[MT][2], mj[MT][2];
    for (int i = 0; i < MT; ++i) sj[i][0] = sj[i][1] = mj[i][0] = mj[i][1] = vdupq_n_f32(0.0f);
    for (int64_t b = 8 * j; b < 8 * j + 8; ++b) {
      const uint8_t* p = tile + b * block_bytes;
#if defined(__GNUC__)
      if constexpr (MT == 1)
        for (int64_t l = 0; l < block_bytes; l += 64) __builtin_prefetch(p + kPrefetchDistance + l, 0, 3);
#endif
      const BlockA8* xb[MT];
      for (int i = 0; i < MT; ++i) xb[i] = x[i] + b;
      int32x4_t isum[MT][2];
      if constexpr (Halves) {
        for (int h = 0; h < 2; ++h) {
          float32x4_t c0, c1;
          cvt8x8<true>(ks.c + 16 * b + 8 * h, &c0, &c1);
          if (h == 0)
            Dot::template block_dot<F, MT, 0>(p, xb, isum);
          else
            Dot::template block_dot<F, MT, 1>(p, xb, isum);
          for (int i = 0; i < MT; ++i) {
            const float d = xb[i]->d;
            sj[i][0] = vfmaq_f32(sj[i][0], vcvtq_f32_s32(isum[i][0]), vmulq_n_f32(c0, d));
            sj[i][1] = vfmaq_f32(sj[i][1], vcvtq_f32_s32(isum[i][1]), vmulq_n_f32(c1, d));
          }
        }
      } else {
        float32x4_t c0, c1, mc0 = vdupq_n_f32(0.0f), mc1 = mc0;
        cvt8x8<kSigned>(ks.c + 8 * b, &c0, &c1);
        if constexpr (kMin) cvt8x8<false>(ks.mc + 8 * b, &mc0, &mc1);
        Dot::template block_dot<F, MT>(p, xb, isum);
        for (int i = 0; i < MT; ++i) {
          const float d = xb[i]->d;
          sj[i][0] = vfmaq_f32(sj[i][0], vcvtq_f32_s32(isum[i][0]), vmulq_n_f32(c0, d));
          sj[i][1] = vfmaq_f32(sj[i][1], vcvtq_f32_s32(isum[i][1]), vmulq_n_f32(c1, d));
          if constexpr (kMin) {
            const float ds = xb[i]->dsum;
            mj[i][0] = vfmaq_n_f32(mj[i][0], mc0, ds);
            mj[i][1] = vfmaq_n_f32(mj[i][1], mc1, ds);
          }
        }
      }
    }
    const float32x4_t d0 = load_f16x4(ks.d + 8 * j), d1 = load_f16x4(ks.d + 8 * j + 4);
    for (int i = 0; i < MT; ++i) {
      acc[i][0] = vfmaq_f32(acc[i][0], d0, sj[i][0]);
      acc[i][1] = vfmaq_f32(acc[i][1], d1, sj[i][1]);
    }
    if constexpr (kMin) {
      const float32x4_t m0 = load_f16x4(ks.dmin + 8 * j), m1 = load_f16x4(ks.dmin + 8 * j + 4);
      for (int i = 0; i < MT; ++i) {
        acc[i][0] = vfmsq_f32(acc[i][0], m0, mj[i][0]);
        acc[i][1] = vfmsq_f32(acc[i][1], m1, mj[i][1]);
      }
    }
  }
  for (int i = 0; i < MT; ++i) {
    vst1q_f32(y[i], acc[i][0]);
    vst1q_f32(y[i] + 4, acc[i][1]);
  }
}

template <QuantFormat F, int MT, class Dot>
inline void tile8_any(const BlockA8* const* x, const QuantWeight& w, int64_t n0, float* const* y) {
  if constexpr (F == QuantFormat::Q6K) {
    tile8_k<F, MT, Dot, true>(x, w, n0, y);
  } else if constexpr (traits(F).k_scales) {
    if (F == QuantFormat::Q8K && w.group == 16)
      tile8_k<F, MT, Dot, true>(x, w, n0, y);
    else
      tile8_k<F, MT, Dot, false>(x, w, n0, y);
  } else {
    tile8<F, MT, Dot>(x, w, n0, y);
  }
}

template <QuantFormat F, class Dot>
void tile8_tokens(int mt, const BlockA8* const* x, const QuantWeight& w, int64_t n0, float* const* y) {
  switch (mt) {
    case 4: tile8_any<F, 4, Dot>(x, w, n0, y); break;
    case 3: tile8_any<F, 3, Dot>(x, w, n0, y); break;
    case 2: tile8_any<F, 2, Dot>(x, w, n0, y); break;
    default: tile8_any<F, 1, Dot>(x, w, n0, y); break;
  }
}

template <QuantFormat F, class Dot>
void matmul(const BlockA8* xq, int64_t T, const QuantWeight& w, int64_t n0, int64_t n1, float* y,
            int64_t ldy) {
  const int64_t nb = w.blocks();
  // Full row tiles here; a last partial tile (N % 8 rows) is left to the scalar reference.
  const int64_t full_end = n1 < (w.N & ~int64_t(7)) ? n1 : (w.N & ~int64_t(7));
  // Tokens in blocks whose activations stay in L2 while each row tile (in L1) meets all of them.
  const int64_t t_block = 64;
  for (int64_t t0 = 0; t0 < T; t0 += t_block) {
    const int64_t t1 = t0 + t_block < T ? t0 + t_block : T;
    for (int64_t n = n0; n < full_end; n += kTileRows) {
      for (int64_t t = t0; t < t1; t += 4) {
        const int mt = int(t1 - t < 4 ? t1 - t : 4);
        const BlockA8* x[4];
        float* yr[4];
        for (int i = 0; i < mt; ++i) {
          x[i] = xq + (t + i) * nb;
          yr[i] = y + (t + i) * ldy + n;
        }
        tile8_tokens<F, Dot>(mt, x, w, n, yr);
      }
    }
  }
  if (full_end < n1)
    quant_scalar_table().matmul[int(F)](xq, T, w, full_end > n0 ? full_end : n0, n1, y, ldy);
}

template <QuantFormat F>
void matmul_baseline(const BlockA8* xq, int64_t T, const QuantWeight& w, int64_t n0, int64_t n1, float* y,
                     int64_t ldy) {
  matmul<F, Baseline>(xq, T, w, n0, n1, y, ldy);
}

#ifdef EXAONE_QUANT_SDOT
// The tile loops above have the default target, so they cannot inline an SDOT block_dot; flatten
// inlines them here instead, where SDOT is allowed, and the block sums with them.
template <QuantFormat F>
EXAONE_DOTPROD __attribute__((flatten)) void matmul_sdot(const BlockA8* xq, int64_t T, const QuantWeight& w,
                                                         int64_t n0, int64_t n1, float* y, int64_t ldy) {
  matmul<F, Sdot>(xq, T, w, n0, n1, y, ldy);
}
#endif

// A table's matmuls, in QuantFormat order.
#define EXAONE_NEON_MATMULS(fn)                                                                       \
  {                                                                                                   \
    fn<QuantFormat::Q8G>, fn<QuantFormat::Q4G>, fn<QuantFormat::Q4GA>, fn<QuantFormat::Q8K>,          \
        fn<QuantFormat::Q4KA>, fn<QuantFormat::Q8KA>, fn<QuantFormat::Q6K>                            \
  }

// ---- weight quantizer sums ----------------------------------------------------------------------
// The scalar reference's 8 partial sums are lanes 0-3 of the first vector and 0-3 of the second,
// with the same operations in the same order (no FMA contraction: plain mul then add), so both
// give identical sums.

inline void lanes_to_double(float32x4_t v0, float32x4_t v1, double* out) {
  float l[8];
  vst1q_f32(l, v0);
  vst1q_f32(l + 4, v1);
  double s = 0.0;
  for (int j = 0; j < 8; ++j) s += l[j];
  *out = s;
}

inline float32x4_t round_ne4(float32x4_t v) {  // (v + 1.5 * 2^23) - 1.5 * 2^23, as the scalar code
  const float32x4_t magic = vdupq_n_f32(12582912.0f);
  return vsubq_f32(vaddq_f32(v, magic), magic);
}

// clamp as the scalar code writes it: v < lo ? lo : v, then v > hi ? hi : v
inline float32x4_t clamp4(float32x4_t v, float32x4_t lo, float32x4_t hi) {
  v = vbslq_f32(vcltq_f32(v, lo), lo, v);
  return vbslq_f32(vcgtq_f32(v, hi), hi, v);
}

void quant_sym_sums(const float* w, int64_t n, float is, float lo, float hi, double* swq, double* sqq) {
  const float32x4_t vis = vdupq_n_f32(is), vlo = vdupq_n_f32(lo), vhi = vdupq_n_f32(hi);
  float32x4_t a[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)}, b[2] = {a[0], a[0]};
  for (int64_t i = 0; i < n; i += 8) {
    for (int h = 0; h < 2; ++h) {
      const float32x4_t wv = vld1q_f32(w + i + 4 * h);
      const float32x4_t q = clamp4(round_ne4(vmulq_f32(wv, vis)), vlo, vhi);
      a[h] = vaddq_f32(a[h], vmulq_f32(wv, q));
      b[h] = vaddq_f32(b[h], vmulq_f32(q, q));
    }
  }
  lanes_to_double(a[0], a[1], swq);
  lanes_to_double(b[0], b[1], sqq);
}

void quant_asym_sums(const float* w, int64_t n, float lo, float is, double* su, double* suu, double* suw) {
  const float32x4_t vis = vdupq_n_f32(is), vlo = vdupq_n_f32(lo);
  const float32x4_t zero = vdupq_n_f32(0.0f), fifteen = vdupq_n_f32(15.0f);
  float32x4_t a[2] = {zero, zero}, b[2] = {zero, zero}, c[2] = {zero, zero};
  for (int64_t i = 0; i < n; i += 8) {
    for (int h = 0; h < 2; ++h) {
      const float32x4_t wv = vld1q_f32(w + i + 4 * h);
      const float32x4_t u = clamp4(round_ne4(vmulq_f32(vsubq_f32(wv, vlo), vis)), zero, fifteen);
      a[h] = vaddq_f32(a[h], u);
      b[h] = vaddq_f32(b[h], vmulq_f32(u, u));
      c[h] = vaddq_f32(c[h], vmulq_f32(u, wv));
    }
  }
  lanes_to_double(a[0], a[1], su);
  lanes_to_double(b[0], b[1], suu);
  lanes_to_double(c[0], c[1], suw);
}

}  // namespace

const QuantKernelTable* quant_neon_table() {
  static const QuantKernelTable table = {
      "neon",
      quantize_a8,
      EXAONE_NEON_MATMULS(matmul_baseline),
      quant_scalar_table().dequant_row,  // only used for embedding rows; not worth a variant
      quant_sym_sums,
      quant_asym_sums,
  };
  return &table;
}

const QuantKernelTable* quant_neon_dotprod_table() {
#ifdef EXAONE_QUANT_SDOT
  // Named like the kernel table it goes with (quant_isa() == isa()); only the matmuls differ.
  static const QuantKernelTable table = {
      "neon",
      quantize_a8,
      EXAONE_NEON_MATMULS(matmul_sdot),
      quant_scalar_table().dequant_row,
      quant_sym_sums,
      quant_asym_sums,
  };
  return cpu_features().dotprod ? &table : nullptr;
#else
  return nullptr;
#endif
}

}  // namespace kernels
}  // namespace exaone
