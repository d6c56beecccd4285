// GGUF blocks into our quantized layouts (quant.h), with their own values: the C++ counterpart of
// exaone_cpu.formats' unpackers + QuantLinear.from_codes / from_kcodes (which stay the reference the
// tests hold this to, bit for bit). Block layouts as in ggml-common.h; row tiles threaded.
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>

#include "../runtime/thread_pool.h"
#include "quant_ops.h"

namespace exaone {
namespace ops {

namespace {

using kernels::KScaleTile;

inline uint16_t rd16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }


// The 8 six-bit (scale, min) pairs of a Q4_K / Q5_K block's 12 scale bytes.
inline void k_scale_min(const uint8_t* s, uint8_t* sc, uint8_t* mn) {
  for (int j = 0; j < 4; ++j) {
    sc[j] = s[j] & 63;
    mn[j] = s[j + 4] & 63;
    sc[j + 4] = uint8_t((s[j + 8] & 0x0F) | ((s[j] >> 6) << 4));
    mn[j + 4] = uint8_t((s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4));
  }
}

const int8_t kIQ4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// Writers into row n of the output, at k0 (a multiple of 8): codes one per byte or as nibbles.
struct Out {
  QuantWeight w;
  uint8_t* qw;
  uint16_t* scales;  // Q8G / Q4G
  uint8_t* ks;       // K formats
  std::atomic<int64_t>* bad_scales;  // scales that are inf or NaN, counted across the threads

  // An f16 scale of the block at p, counted when it is inf or NaN (f16 exponent all ones).
  uint16_t scale16(const uint8_t* p) const {
    const uint16_t h = rd16(p);
    if ((h & 0x7C00u) == 0x7C00u) bad_scales->fetch_add(1, std::memory_order_relaxed);
    return h;
  }

  // Consecutive 4-byte runs of a row are 4 * W bytes apart in its tile (quant.h).
  void codes8(int64_t n, int64_t k0, const uint8_t* c, int64_t count) const {
    uint8_t* p = qw + kernels::qweight_index(w, n, k0);
    const int64_t stride = 4 * w.tile_width(n);
    for (int64_t k = 0; k < count; k += 4, p += stride) std::memcpy(p, c + k, 4);
  }
  void nibbles(int64_t n, int64_t k0, const uint8_t* u, int64_t count) const {
    uint8_t* p = qw + kernels::qweight_index(w, n, k0);
    const int64_t stride = 4 * w.tile_width(n);
    for (int64_t k = 0; k < count; k += 8, p += stride)
      for (int i = 0; i < 4; ++i) p[i] = uint8_t((u[k + i] & 15) | (u[k + 4 + i] << 4));
  }
  // u: 6-bit codes (0..63), count a multiple of 32 from k0 (a multiple of 32): per block the low
  // 4 bits as nibbles (their runs 4 W bytes apart as in the int4 formats; nibbles() keeps the low 4
  // bits of each), then the high 2 bits of k 8o + 4s + i in bits 2o of byte (s, i) (quant.h).
  void codes6(int64_t n, int64_t k0, const uint8_t* u, int64_t count) const {
    const int64_t W = w.tile_width(n);
    for (int64_t b = 0; b < count; b += 32) {
      nibbles(n, k0 + b, u + b, 32);
      uint8_t* h = qw + kernels::qweight_high_index(w, n, k0 + b);
      for (int s = 0; s < 2; ++s, h += 4 * W)
        for (int i = 0; i < 4; ++i) {
          uint8_t v = 0;
          for (int o = 0; o < 4; ++o) v = uint8_t(v | (((u[b + 8 * o + 4 * s + i] >> 4) & 3) << (2 * o)));
          h[i] = v;
        }
    }
  }
  void scale(int64_t n, int64_t g, uint16_t s) const { scales[kernels::scale_index(w, n, g)] = s; }
  // K scales of row n: super-block j's d (dmin), group g's c (mc).
  void kd(int64_t n, int64_t j, uint16_t d, uint16_t dmin) const {
    const KScaleTile t = kernels::kscale_tile(w, w.tile_row0(n));
    const int64_t r = n - w.tile_row0(n);
    const_cast<uint16_t*>(t.d)[j * t.W + r] = d;
    if (t.dmin) const_cast<uint16_t*>(t.dmin)[j * t.W + r] = dmin;
  }
  void kc(int64_t n, int64_t g, uint8_t c, uint8_t mc) const {
    const KScaleTile t = kernels::kscale_tile(w, w.tile_row0(n));
    const int64_t r = n - w.tile_row0(n);
    const_cast<uint8_t*>(t.c)[g * t.W + r] = c;
    if (t.mc) const_cast<uint8_t*>(t.mc)[g * t.W + r] = mc;
  }
};

void row_q8_0(const Out& o, int64_t n, const uint8_t* b, int64_t K) {
  for (int64_t blk = 0; blk < K / 32; ++blk, b += 34) {
    o.scale(n, blk, o.scale16(b));
    o.codes8(n, 32 * blk, b + 2, 32);
  }
}

void row_q4_0(const Out& o, int64_t n, const uint8_t* b, int64_t K) {
  uint8_t u[32];
  for (int64_t blk = 0; blk < K / 32; ++blk, b += 18) {
    o.scale(n, blk, o.scale16(b));
    for (int j = 0; j < 16; ++j) {
      u[j] = b[2 + j] & 15;
      u[j + 16] = b[2 + j] >> 4;
    }
    o.nibbles(n, 32 * blk, u, 32);
  }
}

// The scales of Q4_K / Q5_K super-block j of row n: f16 d, dmin, then the 12 packed scale bytes.
void k_scales(const Out& o, int64_t n, int64_t j, const uint8_t* b) {
  uint8_t sc[8], mn[8];
  o.kd(n, j, o.scale16(b), o.scale16(b + 2));
  k_scale_min(b + 4, sc, mn);
  for (int s = 0; s < 8; ++s) o.kc(n, 8 * j + s, sc[s], mn[s]);
}

void row_q4_k(const Out& o, int64_t n, const uint8_t* b, int64_t K) {
  uint8_t u[256];
  for (int64_t j = 0; j < K / 256; ++j, b += 144) {
    k_scales(o, n, j, b);
    for (int q = 0; q < 4; ++q)
      for (int l = 0; l < 32; ++l) {
        u[64 * q + l] = b[16 + 32 * q + l] & 15;
        u[64 * q + 32 + l] = b[16 + 32 * q + l] >> 4;
      }
    o.nibbles(n, 256 * j, u, 256);
  }
}

void row_q5_k(const Out& o, int64_t n, const uint8_t* b, int64_t K) {
  uint8_t u[256];
  for (int64_t j = 0; j < K / 256; ++j, b += 176) {
    k_scales(o, n, j, b);
    const uint8_t* qh = b + 16;
    const uint8_t* qs = b + 48;
    for (int q = 0; q < 4; ++q)
      for (int l = 0; l < 32; ++l) {
        u[64 * q + l] = uint8_t((qs[32 * q + l] & 15) | (((qh[l] >> (2 * q)) & 1) << 4));
        u[64 * q + 32 + l] = uint8_t((qs[32 * q + l] >> 4) | (((qh[l] >> (2 * q + 1)) & 1) << 4));
      }
    o.codes8(n, 256 * j, u, 256);
  }
}

// Q6_K keeps its 6 bits (Q6K): u = the stored code, value (d * sc) * (u - 32).
void row_q6_k(const Out& o, int64_t n, const uint8_t* b, int64_t K) {
  uint8_t q[256];
  for (int64_t j = 0; j < K / 256; ++j, b += 210) {
    const uint8_t* ql = b;
    const uint8_t* qh = b + 128;
    const uint8_t* sc = b + 192;
    o.kd(n, j, o.scale16(b + 208), 0);
    for (int s = 0; s < 16; ++s) o.kc(n, 16 * j + s, sc[s], 0);
    for (int h = 0; h < 2; ++h)
      for (int l = 0; l < 32; ++l) {
        const uint8_t* L = ql + 64 * h;
        const uint8_t H = qh[32 * h + l];
        q[128 * h + l] = uint8_t((L[l] & 15) | ((H & 3) << 4));
        q[128 * h + 32 + l] = uint8_t((L[l + 32] & 15) | (((H >> 2) & 3) << 4));
        q[128 * h + 64 + l] = uint8_t((L[l] >> 4) | (((H >> 4) & 3) << 4));
        q[128 * h + 96 + l] = uint8_t((L[l + 32] >> 4) | (((H >> 6) & 3) << 4));
      }
    o.codes6(n, 256 * j, q, 256);
  }
}

void row_iq4_xs(const Out& o, int64_t n, const uint8_t* b, int64_t K) {
  uint8_t q[256];
  for (int64_t j = 0; j < K / 256; ++j, b += 136) {
    o.kd(n, j, o.scale16(b), 0);
    const uint16_t sh = rd16(b + 2);
    for (int s = 0; s < 8; ++s) {
      const int ls = ((b[4 + s / 2] >> (4 * (s % 2))) & 15) | (((sh >> (2 * s)) & 3) << 4);
      o.kc(n, 8 * j + s, uint8_t(int8_t(ls - 32)), 0);
      for (int l = 0; l < 16; ++l) {
        q[32 * s + l] = uint8_t(kIQ4Values[b[8 + 16 * s + l] & 15]);
        q[32 * s + 16 + l] = uint8_t(kIQ4Values[b[8 + 16 * s + l] >> 4]);
      }
    }
    o.codes8(n, 256 * j, q, 256);
  }
}

struct Repack {
  int type;  // ggml type id
  QuantFormat format;
  int64_t group, block_values, block_bytes;
  void (*row)(const Out&, int64_t, const uint8_t*, int64_t);
};
const Repack kRepacks[] = {
    {8, QuantFormat::Q8G, 32, 32, 34, row_q8_0},     {2, QuantFormat::Q4G, 32, 32, 18, row_q4_0},
    {12, QuantFormat::Q4KA, 32, 256, 144, row_q4_k}, {13, QuantFormat::Q8KA, 32, 256, 176, row_q5_k},
    {14, QuantFormat::Q6K, 16, 256, 210, row_q6_k},  {23, QuantFormat::Q8K, 32, 256, 136, row_iq4_xs},
};

}  // namespace

const char* gguf_repack_target(int type, QuantFormat* format, int64_t* group, int64_t* block_values,
                               int64_t* block_bytes) {
  for (const Repack& r : kRepacks)
    if (r.type == type) {
      *format = r.format;
      *group = r.group;
      *block_values = r.block_values;
      *block_bytes = r.block_bytes;
      return nullptr;
    }
  return "no repack for this ggml type";
}

int64_t gguf_repack(int type, const uint8_t* src, int64_t N, int64_t K, const QuantWeight& w, void* qweight,
                    uint16_t* scales, uint8_t* kscales) {
  const Repack* rp = nullptr;
  for (const Repack& r : kRepacks)
    if (r.type == type) rp = &r;
  if (!rp) throw std::invalid_argument("gguf_repack: no repack for ggml type " + std::to_string(type));
  std::atomic<int64_t> bad{0};
  const Out out{w, static_cast<uint8_t*>(qweight), scales, kscales, &bad};
  const int64_t row_bytes = K / rp->block_values * rp->block_bytes;
  const int64_t tiles = (N + 7) / 8;
  ThreadPool::global().parallel_for(tiles, [&](int64_t t) {
    for (int64_t n = 8 * t; n < N && n < 8 * t + 8; ++n) rp->row(out, n, src + n * row_bytes, K);
  });
  return bad.load();
}

}  // namespace ops
}  // namespace exaone
