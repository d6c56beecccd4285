// Graph-agnostic ops on raw, already-validated buffers. Each splits its work over the global
// thread pool and calls the active kernel table; none allocates per call beyond thread-local
// scratch that is reused.
#pragma once
#include <cstdint>

#include "../kernels/kernels.h"

namespace exaone {
namespace ops {

using kernels::WeightType;

// y[T, N] = x[T, K] @ w[N, K]^T, w in the given element format.
void matmul(const float* x, int64_t T, int64_t K, const void* w, WeightType wtype, int64_t N,
            float* y);

// Row-wise RMSNorm of x[rows, n] with weight w[n]; out = w * x / rms(x), or out += that when
// accumulate (the residual add after post_attention_layernorm / post_feedforward_layernorm).
void rmsnorm(const float* x, int64_t rows, int64_t n, const float* w, float eps, float* out,
             bool accumulate);

// out[n] = silu(gate[n]) * up[n]
void silu_mul(const float* gate, const float* up, int64_t n, float* out);

// In-place rotate-half RoPE of x[T, heads, head_dim] at the given positions, with inv_freq
// [head_dim / 2] (already scaled, e.g. llama3) and cos/sin multiplied by attention_scaling.
void rope(float* x, int64_t T, int64_t heads, int64_t head_dim, const int64_t* positions,
          const float* inv_freq, float attention_scaling);

// Attention of q[T, H, D] over a KV cache of S slots k/v[KV, S, D] (each KV head's rows contiguous). key_pos[s] is the absolute
// position held in slot s (-1: empty), so one routine serves linear and ring-buffer caches.
// Query t (at q_pos[t]) sees slot s when 0 <= key_pos[s] <= q_pos[t] and, for window > 0,
// q_pos[t] - key_pos[s] < window. A query that sees no key gets zeros.
// k / v are f32, IEEE f16 (half the bytes to read) or int8 with one f32 scale per row (about a quarter of f32;
// KVView's k_scale / v_scale [KV, S]); the narrow ones are widened to f32 as they are read.
using KVType = kernels::KVElem;

// One sequence's KV cache as attention reads it: k / v [KV, S, D] and the position of each slot
// (and, for an int8 cache, the scales of each row).
struct KVView {
  const void* k;
  const void* v;
  const int64_t* key_pos;
  int64_t S;
  const float* k_scale = nullptr;
  const float* v_scale = nullptr;
};

// Steps of at most this many tokens attend token by token, each row bit-identical to a one-token
// step (speculative decoding verifies its guesses in such steps); longer ones in blocks of 16.
constexpr int64_t kTokenByToken = 16;

void attention(const float* q, int64_t T, int64_t H, int64_t D, const KVView& cache, KVType kv_type,
               int64_t KV, const int64_t* q_pos, int64_t window, float scale, float* out);

// attention() for the rows of several sequences in one call (a batched decode or prefill step):
// row t of q attends within views[view_of_row[t]]. One pass over the thread pool for the batch.
void attention_batch(const float* q, int64_t T, int64_t H, int64_t D, const KVView* views,
                     const int64_t* view_of_row, KVType kv_type, int64_t KV, const int64_t* q_pos,
                     int64_t window, float scale, float* out);

// One sequence's KV cache as attention_block writes it: the arrays of a KVView, writable.
struct KVBuffers {
  void* k;
  void* v;
  int64_t* key_pos;
  int64_t S;
  float* k_scale = nullptr;
  float* v_scale = nullptr;
  KVView view() const { return {k, v, key_pos, S, k_scale, v_scale}; }
};

// The attention half of a decoder layer after its q / k / v projections, in one call: q[T, H, D]
// and k[T, KV, D] normalized per head in place (q_norm / k_norm [D], eps) and, when inv_freq is not
// null, rotated (RoPE at q_pos); then row t's k and v [KV, D] written to slot slots[t] of its
// sequence's cache caches[view_of_row[t]] (view_of_row null: all rows in caches[0]), converted to
// the cache's type, with key_pos[slots[t]] = q_pos[t]; then attention_batch over those caches into
// out[T, H, D]. Exactly the composition of rmsnorm, rope, the store and attention_batch. The rows
// of one sequence must have distinct slots (the binding checks).
void attention_block(float* q, float* k, const float* v, int64_t T, int64_t H, int64_t KV, int64_t D,
                     const float* q_norm, const float* k_norm, float eps, const int64_t* q_pos,
                     const float* inv_freq, const KVBuffers* caches, int64_t n_caches,
                     const int64_t* view_of_row, const int64_t* slots, KVType kv_type, int64_t window,
                     float scale, float* out);

// The int8 KV cache's store: for token t and KV head h, row src[t, h, :] (D values) becomes
// q[h, slots[t], :] = round_half_even(x / s) with s = scales[h, slots[t]] = max|x| / 127 (0 for a
// zero row, its codes 0), computed as x * (1 / s) in f32 like the numpy reference in tests/test_kernels.py.
void kv_store_int8(const float* src, int64_t T, int64_t KV, int64_t D, const int64_t* slots, int64_t S,
                   int8_t* q, float* scales);

// Widens n bf16 / f16 values to f32.
void convert_to_f32(const uint16_t* src, WeightType type, int64_t n, float* dst);

}  // namespace ops
}  // namespace exaone
