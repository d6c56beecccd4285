#include "../kernels/dispatch.h"
#include "../runtime/thread_pool.h"
#include "ops.h"

namespace exaone {
namespace ops {

void matmul(const float* x, int64_t T, int64_t K, const void* w, WeightType wtype, int64_t N,
            float* y) {
  const kernels::KernelTable& kt = kernels::active();
  ThreadPool& pool = ThreadPool::global();
  // Split output columns into a few chunks per thread (balances uneven cores); multiples of 48
  // rows keep the 3-row kernel tiles whole.
  const int64_t target_chunks = int64_t(pool.num_threads()) * 4;
  int64_t chunk = (N + target_chunks - 1) / target_chunks;
  chunk = ((chunk + 47) / 48) * 48;
  const int64_t n_chunks = (N + chunk - 1) / chunk;
  pool.parallel_for(n_chunks, [&](int64_t c) {
    const int64_t n0 = c * chunk, n1 = n0 + chunk < N ? n0 + chunk : N;
    switch (wtype) {
      case WeightType::F32:
        kt.matmul_f32(x, T, K, static_cast<const float*>(w), n0, n1, y, N);
        break;
      case WeightType::BF16:
        kt.matmul_bf16(x, T, K, static_cast<const uint16_t*>(w), n0, n1, y, N);
        break;
      case WeightType::F16:
        kt.matmul_f16(x, T, K, static_cast<const uint16_t*>(w), n0, n1, y, N);
        break;
    }
  });
}

void convert_to_f32(const uint16_t* src, WeightType type, int64_t n, float* dst) {
  const kernels::KernelTable& kt = kernels::active();
  if (type == WeightType::BF16)
    kt.bf16_to_f32(src, dst, n);
  else
    kt.f16_to_f32(src, dst, n);
}

}  // namespace ops
}  // namespace exaone
