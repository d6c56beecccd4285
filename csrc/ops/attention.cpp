#include <cstring>
#include <vector>

#include "../kernels/dispatch.h"
#include "../runtime/thread_pool.h"
#include "ops.h"

namespace exaone {
namespace ops {

void attention(const float* q, int64_t T, int64_t H, int64_t D, const float* k, const float* v,
               int64_t S, int64_t KV, const int64_t* key_pos, const int64_t* q_pos, int64_t window,
               float scale, float* out) {
  const kernels::KernelTable& kt = kernels::active();
  const int64_t group = H / KV;  // query heads per KV head (GQA)
  ThreadPool::global().parallel_for(T * H, [&](int64_t task) {
    const int64_t t = task / H, h = task % H, kvh = h / group;
    thread_local std::vector<float> scores;
    thread_local std::vector<int64_t> slots;
    if (int64_t(scores.size()) < S) {
      scores.resize(size_t(S));
      slots.resize(size_t(S));
    }
    const int64_t p = q_pos[t];
    int64_t n = 0;
    for (int64_t s = 0; s < S; ++s) {
      const int64_t kp = key_pos[s];
      if (kp < 0 || kp > p || (window > 0 && p - kp >= window)) continue;
      slots[size_t(n)] = s;
      ++n;
    }
    const float* qh = q + (t * H + h) * D;
    float* oh = out + (t * H + h) * D;
    std::memset(oh, 0, size_t(D) * sizeof(float));
    if (n == 0) return;
    for (int64_t i = 0; i < n; ++i)
      scores[size_t(i)] = kt.dot_f32(qh, k + (slots[size_t(i)] * KV + kvh) * D, D) * scale;
    kt.softmax_f32(scores.data(), n);
    for (int64_t i = 0; i < n; ++i)
      kt.axpy_f32(scores[size_t(i)], v + (slots[size_t(i)] * KV + kvh) * D, oh, D);
  });
}

}  // namespace ops
}  // namespace exaone
