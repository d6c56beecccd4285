#include <cmath>
#include <vector>

#include "../kernels/dispatch.h"
#include "../runtime/thread_pool.h"
#include "ops.h"

namespace exaone {
namespace ops {

namespace {
// Rows per task so that tiny rows (q_norm over head_dim) are not one task each.
int64_t rows_per_task(int64_t rows, int64_t n) {
  const int64_t min_elems = 4096;
  int64_t r = (min_elems + n - 1) / n;
  return r < 1 ? 1 : (r > rows ? rows : r);
}
}  // namespace

void rmsnorm(const float* x, int64_t rows, int64_t n, const float* w, float eps, float* out,
             bool accumulate) {
  const kernels::KernelTable& kt = kernels::active();
  const int64_t per = rows_per_task(rows, n);
  ThreadPool::global().parallel_for((rows + per - 1) / per, [&](int64_t task) {
    const int64_t r1 = (task + 1) * per < rows ? (task + 1) * per : rows;
    for (int64_t r = task * per; r < r1; ++r) kt.rmsnorm_f32(x + r * n, w, n, eps, out + r * n, accumulate);
  });
}

void silu_mul(const float* gate, const float* up, int64_t n, float* out) {
  const kernels::KernelTable& kt = kernels::active();
  const int64_t block = 8192;
  ThreadPool::global().parallel_for((n + block - 1) / block, [&](int64_t task) {
    const int64_t i0 = task * block, len = i0 + block < n ? block : n - i0;
    kt.silu_mul_f32(gate + i0, up + i0, len, out + i0);
  });
}

void rope(float* x, int64_t T, int64_t heads, int64_t head_dim, const int64_t* positions,
          const float* inv_freq, float attention_scaling) {
  const kernels::KernelTable& kt = kernels::active();
  const int64_t half = head_dim / 2;
  ThreadPool::global().parallel_for(T, [&](int64_t t) {
    thread_local std::vector<float> cs;
    if (int64_t(cs.size()) < 2 * half) cs.resize(size_t(2 * half));
    float* cos = cs.data();
    float* sin = cs.data() + half;
    // Same float32 product as transformers (position * inv_freq), then cos/sin.
    const float pos = float(positions[t]);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = pos * inv_freq[i];
      cos[i] = std::cos(angle) * attention_scaling;
      sin[i] = std::sin(angle) * attention_scaling;
    }
    for (int64_t h = 0; h < heads; ++h) kt.rope_f32(x + (t * heads + h) * head_dim, cos, sin, half);
  });
}

}  // namespace ops
}  // namespace exaone
