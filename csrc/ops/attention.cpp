#include <vector>

#include "../kernels/dispatch.h"
#include "../runtime/thread_pool.h"
#include "ops.h"

namespace exaone {
namespace ops {

void attention(const float* q, int64_t T, int64_t H, int64_t D, const KVView& cache, KVType kv_type,
               int64_t KV, const int64_t* q_pos, int64_t window, float scale, float* out) {
  attention_batch(q, T, H, D, &cache, nullptr, kv_type, KV, q_pos, window, scale, out);
}

void attention_batch(const float* q, int64_t T, int64_t H, int64_t D, const KVView* views,
                     const int64_t* view_of_row, KVType kv_type, int64_t KV, const int64_t* q_pos,
                     int64_t window, float scale, float* out) {
  const kernels::KernelTable& kt = kernels::active();
  const int64_t group = H / KV;  // query heads per KV head (GQA): heads kvh*group .. +group-1
  // A task is one token and a range of KV heads: the slots the token sees are found once per task
  // and every key/value row is read once for the whole group of query heads. Decode (few tokens)
  // splits the KV heads over the threads; prefill gives each task a whole token.
  ThreadPool& pool = ThreadPool::global();
  const int64_t heads_per_task = T >= 2 * int64_t(pool.num_threads()) ? KV : 1;
  const int64_t tasks_per_token = KV / heads_per_task;
  pool.parallel_for(T * tasks_per_token, [&](int64_t task) {
    const int64_t t = task / tasks_per_token, kv0 = task % tasks_per_token * heads_per_task;
    const KVView& view = views[view_of_row ? view_of_row[t] : 0];
    const void *k = view.k, *v = view.v;
    const int64_t* key_pos = view.key_pos;
    const int64_t S = view.S;
    thread_local std::vector<float> scores, k32, v32;
    thread_local std::vector<int64_t> slots, rows;
    if (int64_t(slots.size()) < S) slots.resize(size_t(S));
    if (int64_t(scores.size()) < group * S) scores.resize(size_t(group * S));
    const int64_t p = q_pos[t];
    int64_t n = 0;
    for (int64_t s = 0; s < S; ++s) {
      const int64_t kp = key_pos[s];
      if (kp < 0 || kp > p || (window > 0 && p - kp >= window)) continue;
      slots[size_t(n++)] = s;
    }
    for (int64_t kvh = kv0; kvh < kv0 + heads_per_task; ++kvh) {
      const int64_t h0 = (t * H + kvh * group) * D;
      if (n == 0) {  // a query that sees no key gets zeros
        for (int64_t j = 0; j < group * D; ++j) out[h0 + j] = 0.0f;
        continue;
      }
      if (kv_type == KVType::F32) {
        const float* kh = static_cast<const float*>(k) + kvh * S * D;
        const float* vh = static_cast<const float*>(v) + kvh * S * D;
        kt.attend_f32(q + h0, group, D, kh, vh, D, slots.data(), n, scale, scores.data(), out + h0);
        continue;
      }
      // f16 / int8 cache: read at half / a quarter of the bytes, widened in registers where the ISA
      // has a kernel for it, else the visible rows widened into contiguous f32 scratch (n x D per
      // head, an int8 row times its scale) first.
      const uint16_t* kh16 = static_cast<const uint16_t*>(k) + kvh * S * D;
      const uint16_t* vh16 = static_cast<const uint16_t*>(v) + kvh * S * D;
      const int8_t* kh8 = static_cast<const int8_t*>(k) + kvh * S * D;
      const int8_t* vh8 = static_cast<const int8_t*>(v) + kvh * S * D;
      const float* ksh = view.k_scale ? view.k_scale + kvh * S : nullptr;
      const float* vsh = view.v_scale ? view.v_scale + kvh * S : nullptr;
      if (kv_type == KVType::F16 && kt.attend_f16) {
        kt.attend_f16(q + h0, group, D, kh16, vh16, D, slots.data(), n, scale, scores.data(), out + h0);
        continue;
      }
      if (kv_type == KVType::I8 && kt.attend_i8) {
        kt.attend_i8(q + h0, group, D, kh8, vh8, ksh, vsh, D, slots.data(), n, scale, scores.data(), out + h0);
        continue;
      }
      if (int64_t(k32.size()) < n * D) {
        k32.resize(size_t(n * D));
        v32.resize(size_t(n * D));
      }
      if (int64_t(rows.size()) < n) {
        const int64_t old = int64_t(rows.size());
        rows.resize(size_t(n));
        for (int64_t i = old; i < n; ++i) rows[size_t(i)] = i;
      }
      for (int64_t i = 0; i < n; ++i) {
        const int64_t s = slots[size_t(i)];
        if (kv_type == KVType::F16) {
          kt.f16_to_f32(kh16 + s * D, k32.data() + i * D, D);
          kt.f16_to_f32(vh16 + s * D, v32.data() + i * D, D);
        } else {
          for (int64_t d = 0; d < D; ++d) {
            k32[size_t(i * D + d)] = float(kh8[s * D + d]) * ksh[s];
            v32[size_t(i * D + d)] = float(vh8[s * D + d]) * vsh[s];
          }
        }
      }
      kt.attend_f32(q + h0, group, D, k32.data(), v32.data(), D, rows.data(), n, scale, scores.data(),
                    out + h0);
    }
  });
}

}  // namespace ops
}  // namespace exaone
