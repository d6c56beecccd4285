// Kernel table: one scalar reference and one entry per ISA variant, chosen once at run time.
// Kernels are single-threaded and graph-agnostic; csrc/ops splits work across the thread pool.
#pragma once
#include <cstdint>

namespace exaone {
namespace kernels {

// Element formats a weight matrix may be stored in (the checkpoint's dtype, memory-mapped).
enum class WeightType : int { F32 = 0, BF16 = 1, F16 = 2 };

// Element formats of a KV cache: f32, IEEE f16, or int8 with one f32 scale per row.
enum class KVElem : int { F32 = 0, F16 = 1, I8 = 2 };

// y[t * ldy + n] = sum_k x[t * K + k] * w[n * K + k]   for t in [0, T), n in [n0, n1)
// (w is [N, K] row-major as a Hugging Face Linear stores it; activations are f32)
using MatmulF32Fn = void (*)(const float* x, int64_t T, int64_t K, const float* w, int64_t n0,
                             int64_t n1, float* y, int64_t ldy);
using MatmulU16Fn = void (*)(const float* x, int64_t T, int64_t K, const uint16_t* w, int64_t n0,
                             int64_t n1, float* y, int64_t ldy);

struct KernelTable {
  const char* name;
  MatmulF32Fn matmul_f32;
  MatmulU16Fn matmul_bf16;
  MatmulU16Fn matmul_f16;
  float (*dot_f32)(const float* a, const float* b, int64_t n);
  // y += a * x
  void (*axpy_f32)(float a, const float* x, float* y, int64_t n);
  // out = w * (x / rms(x))  or, with accumulate, out += w * (x / rms(x))
  void (*rmsnorm_f32)(const float* x, const float* w, int64_t n, float eps, float* out,
                      bool accumulate);
  // out = silu(gate) * up
  void (*silu_mul_f32)(const float* gate, const float* up, int64_t n, float* out);
  // In-place rotate-half RoPE of one head: x[:half], x[half:] rotated by (cos, sin) [half].
  void (*rope_f32)(float* x, const float* cos, const float* sin, int64_t half);
  // In-place softmax over n scores (n >= 1).
  void (*softmax_f32)(float* x, int64_t n);
  // Attention of G query heads q[G, D] that share one KV head (GQA) over n keys: key i is
  // k[slots[i] * stride .. + D], its value v[slots[i] * stride ..]. scores is [G, n] scratch;
  // out[G, D] = softmax(q k^T * scale) v. Each key and value row is read once for all G heads.
  void (*attend_f32)(const float* q, int64_t G, int64_t D, const float* k, const float* v,
                     int64_t stride, const int64_t* slots, int64_t n, float scale, float* scores,
                     float* out);
  // attend_f32 over an f16 KV cache, each element widened as it is read. Null where the ISA has
  // no variant: the caller then widens the visible rows into f32 scratch for attend_f32.
  void (*attend_f16)(const float* q, int64_t G, int64_t D, const uint16_t* k, const uint16_t* v,
                     int64_t stride, const int64_t* slots, int64_t n, float scale, float* scores,
                     float* out);
  // attend_f32 over an int8 KV cache: key row r is ks[r] * k[r * stride ..] and value row r is
  // vs[r] * v[r * stride ..] (one scale per row, indexed by slot like the rows). The scales are
  // applied to the dot product and to the softmax weight, never per element. Null where the ISA
  // has no variant: the caller then widens the visible rows into f32 scratch for attend_f32.
  void (*attend_i8)(const float* q, int64_t G, int64_t D, const int8_t* k, const int8_t* v, const float* ks,
                    const float* vs, int64_t stride, const int64_t* slots, int64_t n, float scale,
                    float* scores, float* out);
  void (*bf16_to_f32)(const uint16_t* src, float* dst, int64_t n);
  void (*f16_to_f32)(const uint16_t* src, float* dst, int64_t n);
  // n f32 values as IEEE f16 bits, rounded to nearest even (numpy's astype(float16)): the f16 KV
  // cache's store.
  void (*f32_to_f16)(const float* src, uint16_t* dst, int64_t n);
  // out[i] = exp((x[i] - shift) * scale) for x[i] <= shift, exactly 0 where the exponent is below
  // -87 (or -inf: masked tokens); returns the sum of out in double. The sampler's softmax numerator.
  double (*exp_shifted_f32)(const float* x, int64_t n, float shift, float scale, float* out);
  // out[j] = the sum of the x[i] >= thresholds[j], for j < k, 1 <= k <= 8 (x >= 0: the sampler's weights).
  // The mass above several cut-offs in one pass: how top-p brackets its threshold.
  void (*sums_at_least_f32)(const float* x, int64_t n, const float* thresholds, int64_t k, double* out);
  // The largest x[i] (-inf for n = 0), copying x to copy_to when it is not null; *all_finite says
  // whether every x[i] was finite (no NaN, no infinity). The sampler's first pass over the logits.
  float (*max_f32)(const float* x, int64_t n, float* copy_to, bool* all_finite);
  // Writes the indices i with lo <= x[i] < hi, ascending, to out; returns how many (out has room for n).
  // How the sampler gathers top-k's tokens and the tokens of top-p's bracket.
  int64_t (*find_in_range_f32)(const float* x, int64_t n, float lo, float hi, int32_t* out);
  // Attention of a block of T tokens, each with G query heads sharing one KV head, over n keys:
  // row (t, g) is q[t * ld + g * D .. + D] at position qpos[t], its output out[t * ld + g * D ..].
  // Key i is row slots[i] of k / v (elements of type kv; for I8 scaled by ks / vs[slots[i]] as in
  // attend_i8, else ks / vs are null) at position kpos[i] >= 0; token t sees it when kpos[i] <=
  // qpos[t] and, for window > 0, qpos[t] - kpos[i] < window. Each token gets what attend_* gives it
  // over the keys it sees (zeros for none). Prefill's kernel: the keys are read once per block, not
  // once per token. Null, or false returned (a head_dim or a position the variant does not cover),
  // where the ISA has none: the caller then attends token by token.
  bool (*attend_rows)(KVElem kv, const float* q, int64_t T, int64_t G, int64_t ld, int64_t D,
                      const int64_t* qpos, const void* k, const void* v, const float* ks, const float* vs,
                      int64_t stride, const int64_t* slots, const int64_t* kpos, int64_t n, int64_t window,
                      float scale, float* out);
};

// Exact scalar half <-> float conversions (round to nearest even), shared by the references.
float f16_to_f32_value(uint16_t h);
uint16_t f32_to_f16_value(float f);

const KernelTable& scalar_table();
// Null when the library was built without that variant (e.g. AVX2 on an ARM build).
const KernelTable* avx2_table();
// AVX2's table with AVX-512 F matmuls (16 lanes, 32 registers).
const KernelTable* avx512_table();
const KernelTable* neon_table();

}  // namespace kernels
}  // namespace exaone
