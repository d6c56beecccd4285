#include <algorithm>
#include <cmath>
#include <vector>

#include "../kernels/dispatch.h"
#include "../runtime/thread_pool.h"
#include "ops.h"

namespace exaone {
namespace ops {

namespace {

// Scratch of one thread: scores [group, keys], the visible slots, and (for an ISA without a kernel for
// the cache's type) the visible rows widened to f32.
struct Scratch {
  std::vector<float> scores, k32, v32;
  std::vector<int64_t> slots, rows, kpos;
};

// The first row of KV head kvh in a cache of S slots of D elements of the given type.
const void* head_rows(const void* base, KVType type, int64_t kvh, int64_t S, int64_t D) {
  const int64_t bytes = type == KVType::F32 ? 4 : type == KVType::F16 ? 2 : 1;
  return static_cast<const char*>(base) + kvh * S * D * bytes;
}

// The slots of view some query at a position in [pmin, pmax] sees (the slot of every key with
// 0 <= key_pos <= pmax and, for window > 0, pmin - key_pos < window), in slot order, into slots (and
// their positions into kpos when it is not null); returns how many.
int64_t visible_slots(const KVView& view, int64_t pmin, int64_t pmax, int64_t window, int64_t* slots,
                      int64_t* kpos) {
  int64_t n = 0;
  for (int64_t s = 0; s < view.S; ++s) {
    const int64_t kp = view.key_pos[s];
    if (kp < 0 || kp > pmax || (window > 0 && pmin - kp >= window)) continue;
    if (kpos) kpos[n] = kp;
    slots[n++] = s;
  }
  return n;
}

// out[group, D] for the group of query heads q[group, D] of KV head kvh over the n visible slots.
void attend_head(const kernels::KernelTable& kt, const KVView& view, KVType kv_type, const float* q,
                 int64_t group, int64_t D, int64_t kvh, int64_t n, float scale, Scratch& w, float* out) {
  if (n == 0) {  // a query that sees no key gets zeros
    for (int64_t j = 0; j < group * D; ++j) out[j] = 0.0f;
    return;
  }
  const int64_t S = view.S;
  const int64_t* slots = w.slots.data();
  float* scores = w.scores.data();
  const void* kh = head_rows(view.k, kv_type, kvh, S, D);
  const void* vh = head_rows(view.v, kv_type, kvh, S, D);
  if (kv_type == KVType::F32) {
    kt.attend_f32(q, group, D, static_cast<const float*>(kh), static_cast<const float*>(vh), D, slots, n, scale,
                  scores, out);
    return;
  }
  // f16 / int8 cache: read at half / a quarter of the bytes, widened in registers where the ISA has
  // a kernel for it, else the visible rows widened into contiguous f32 scratch (n x D, an int8 row
  // times its scale) first.
  const uint16_t* kh16 = static_cast<const uint16_t*>(kh);
  const uint16_t* vh16 = static_cast<const uint16_t*>(vh);
  const int8_t* kh8 = static_cast<const int8_t*>(kh);
  const int8_t* vh8 = static_cast<const int8_t*>(vh);
  const float* ksh = view.k_scale ? view.k_scale + kvh * S : nullptr;
  const float* vsh = view.v_scale ? view.v_scale + kvh * S : nullptr;
  if (kv_type == KVType::F16 && kt.attend_f16) {
    kt.attend_f16(q, group, D, kh16, vh16, D, slots, n, scale, scores, out);
    return;
  }
  if (kv_type == KVType::I8 && kt.attend_i8) {
    kt.attend_i8(q, group, D, kh8, vh8, ksh, vsh, D, slots, n, scale, scores, out);
    return;
  }
  if (int64_t(w.k32.size()) < n * D) {
    w.k32.resize(size_t(n * D));
    w.v32.resize(size_t(n * D));
  }
  if (int64_t(w.rows.size()) < n) {
    const int64_t old = int64_t(w.rows.size());
    w.rows.resize(size_t(n));
    for (int64_t i = old; i < n; ++i) w.rows[size_t(i)] = i;
  }
  float *k32 = w.k32.data(), *v32 = w.v32.data();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = slots[i];
    if (kv_type == KVType::F16) {
      kt.f16_to_f32(kh16 + s * D, k32 + i * D, D);
      kt.f16_to_f32(vh16 + s * D, v32 + i * D, D);
    } else {
      for (int64_t d = 0; d < D; ++d) {
        k32[i * D + d] = float(kh8[s * D + d]) * ksh[s];
        v32[i * D + d] = float(vh8[s * D + d]) * vsh[s];
      }
    }
  }
  kt.attend_f32(q, group, D, k32, v32, D, w.rows.data(), n, scale, scores, out);
}

}  // namespace

void attention(const float* q, int64_t T, int64_t H, int64_t D, const KVView& cache, KVType kv_type,
               int64_t KV, const int64_t* q_pos, int64_t window, float scale, float* out) {
  attention_batch(q, T, H, D, &cache, nullptr, kv_type, KV, q_pos, window, scale, out);
}

void attention_batch(const float* q, int64_t T, int64_t H, int64_t D, const KVView* views,
                     const int64_t* view_of_row, KVType kv_type, int64_t KV, const int64_t* q_pos,
                     int64_t window, float scale, float* out) {
  const kernels::KernelTable& kt = kernels::active();
  const int64_t group = H / KV;  // query heads per KV head (GQA): heads kvh*group .. +group-1
  // A task is one KV head and a block of tokens; each key/value row is read once for the whole group
  // of query heads. Decode (few tokens) gives each task one token, so the KV heads spread over the
  // threads. Prefill gives each task 16 consecutive tokens of one head, attended together by the
  // table's attend_rows (the keys any of them sees, in blocks, read once for all 16 tokens: the
  // multiply-adds of a key block's scores and values then come from registers and L1) or, where the
  // ISA has none, token by token with that head's rows kept in L2 from one query to the next.
  //
  // A sequence with at most kTokenByToken tokens in the step (decoding, a speculative verification)
  // attends token by token: each row is then computed exactly as a one-token step computes it, bit
  // for bit (the blocked kernel's online softmax rounds differently), so a verification's logits are
  // the ones decoding would have produced: no int8 activation of a quantized model flips its rounding.
  ThreadPool& pool = ThreadPool::global();
  const int64_t tokens_per_task = T >= 2 * int64_t(pool.num_threads()) ? 16 : 1;
  // rows_of[t]: how many rows of this step belong to row t's sequence
  thread_local std::vector<int64_t> run_rows;
  run_rows.assign(size_t(T), T);
  if (view_of_row)
    for (int64_t t = 0, te; t < T; t = te) {
      for (te = t + 1; te < T && view_of_row[te] == view_of_row[t];) ++te;
      for (int64_t u = t; u < te; ++u) run_rows[size_t(u)] = te - t;
    }
  const int64_t* rows_of = run_rows.data();
  const int64_t blocks = (T + tokens_per_task - 1) / tokens_per_task;
  pool.parallel_for(blocks * KV, [&](int64_t task) {
    const int64_t kvh = task / blocks, t0 = task % blocks * tokens_per_task;
    const int64_t t1 = t0 + tokens_per_task < T ? t0 + tokens_per_task : T;
    thread_local Scratch w;
    for (int64_t t = t0; t < t1;) {
      const int64_t vi = view_of_row ? view_of_row[t] : 0;
      int64_t te = t + 1;  // [t, te): consecutive tokens of one sequence
      while (te < t1 && (view_of_row ? view_of_row[te] : 0) == vi) ++te;
      const KVView& view = views[vi];
      const int64_t S = view.S;
      if (int64_t(w.slots.size()) < S) w.slots.resize(size_t(S));
      // the slots any of these tokens sees, read once for all of them (not in a short step, see above)
      if (te - t > 1 && rows_of[t] > kTokenByToken && kt.attend_rows) {
        int64_t pmin = q_pos[t], pmax = q_pos[t];
        for (int64_t u = t + 1; u < te; ++u) pmin = std::min(pmin, q_pos[u]), pmax = std::max(pmax, q_pos[u]);
        if (int64_t(w.kpos.size()) < S) w.kpos.resize(size_t(S));
        const int64_t n = visible_slots(view, pmin, pmax, window, w.slots.data(), w.kpos.data());
        const int64_t h0 = (t * H + kvh * group) * D;
        const void* kh = head_rows(view.k, kv_type, kvh, S, D);
        const void* vh = head_rows(view.v, kv_type, kvh, S, D);
        const float* ksh = view.k_scale ? view.k_scale + kvh * S : nullptr;
        const float* vsh = view.v_scale ? view.v_scale + kvh * S : nullptr;
        if (kt.attend_rows(kv_type, q + h0, te - t, group, H * D, D, q_pos + t, kh, vh, ksh, vsh, D, w.slots.data(),
                           w.kpos.data(), n, window, scale, out + h0)) {
          t = te;
          continue;
        }
      }
      for (; t < te; ++t) {
        if (int64_t(w.scores.size()) < group * S) w.scores.resize(size_t(group * S));
        const int64_t n = visible_slots(view, q_pos[t], q_pos[t], window, w.slots.data(), nullptr);
        const int64_t h0 = (t * H + kvh * group) * D;
        attend_head(kt, view, kv_type, q + h0, group, D, kvh, n, scale, w, out + h0);
      }
    }
  });
}

void attention_block(float* q, float* k, const float* v, int64_t T, int64_t H, int64_t KV, int64_t D,
                     const float* q_norm, const float* k_norm, float eps, const int64_t* q_pos,
                     const float* inv_freq, const KVBuffers* caches, int64_t n_caches,
                     const int64_t* view_of_row, const int64_t* slots, KVType kv_type, int64_t window,
                     float scale, float* out) {
  rmsnorm(q, T * H, D, q_norm, eps, q, false);
  rmsnorm(k, T * KV, D, k_norm, eps, k, false);
  if (inv_freq) {
    rope(q, T, H, D, q_pos, inv_freq, 1.0f);
    rope(k, T, KV, D, q_pos, inv_freq, 1.0f);
  }
  const kernels::KernelTable& kt = kernels::active();
  // Rows write distinct slots (of one cache, or of different caches): no two tasks touch one row.
  ThreadPool::global().parallel_for(T, [&](int64_t t) {
    const KVBuffers& c = caches[view_of_row ? view_of_row[t] : 0];
    const int64_t s = slots[t], S = c.S;
    const float* kt_rows = k + t * KV * D;
    const float* vt_rows = v + t * KV * D;
    if (kv_type == KVType::I8) {
      kv_store_int8(kt_rows, 1, KV, D, &s, S, static_cast<int8_t*>(c.k), c.k_scale);
      kv_store_int8(vt_rows, 1, KV, D, &s, S, static_cast<int8_t*>(c.v), c.v_scale);
    } else {
      for (int64_t h = 0; h < KV; ++h) {
        const int64_t at = (h * S + s) * D;
        if (kv_type == KVType::F16) {
          kt.f32_to_f16(kt_rows + h * D, static_cast<uint16_t*>(c.k) + at, D);
          kt.f32_to_f16(vt_rows + h * D, static_cast<uint16_t*>(c.v) + at, D);
        } else {
          std::copy(kt_rows + h * D, kt_rows + (h + 1) * D, static_cast<float*>(c.k) + at);
          std::copy(vt_rows + h * D, vt_rows + (h + 1) * D, static_cast<float*>(c.v) + at);
        }
      }
    }
    c.key_pos[s] = q_pos[t];
  });
  thread_local std::vector<KVView> views;
  views.clear();
  for (int64_t b = 0; b < n_caches; ++b) views.push_back(caches[b].view());
  attention_batch(q, T, H, D, views.data(), view_of_row, kv_type, KV, q_pos, window, scale, out);
}

void kv_store_int8(const float* src, int64_t T, int64_t KV, int64_t D, const int64_t* slots, int64_t S,
                   int8_t* q, float* scales) {
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < KV; ++h) {
      const float* x = src + (t * KV + h) * D;
      float amax = 0.0f;
      for (int64_t d = 0; d < D; ++d) amax = std::fmax(amax, std::fabs(x[d]));
      const float s = amax / 127.0f;
      const float inv = s > 0.0f ? 1.0f / s : 0.0f;
      int8_t* out = q + (h * S + slots[t]) * D;
      for (int64_t d = 0; d < D; ++d) out[d] = int8_t(std::nearbyint(x[d] * inv));  // ties to even
      scales[h * S + slots[t]] = s;
    }
  }
}

}  // namespace ops
}  // namespace exaone
