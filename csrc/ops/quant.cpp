#include <exception>
#include <mutex>
#include <vector>

#include "../kernels/dispatch.h"
#include "../runtime/thread_pool.h"
#include "quant_ops.h"

namespace exaone {
namespace ops {

void quantize_activations(const float* x, int64_t T, int64_t K, BlockA8* out) {
  const kernels::QuantKernelTable& qt = kernels::quant_active();
  const int64_t nb = K / kernels::kQBlock;
  if (T == 1) {
    qt.quantize_a8(x, K, out);
    return;
  }
  ThreadPool::global().parallel_for(T, [&](int64_t t) { qt.quantize_a8(x + t * K, K, out + t * nb); });
}

void quant_matmul_multi(const float* x, int64_t T, const QuantWeight* ws, int64_t n_w, float* const* ys) {
  const kernels::QuantKernelTable& qt = kernels::quant_active();
  const int64_t K = ws[0].K;
  // Scratch of the calling thread: grows to the largest T * K / 32 seen, then is reused.
  thread_local std::vector<BlockA8> scratch;
  const size_t need = size_t(T * (K / kernels::kQBlock));
  if (scratch.size() < need) scratch.resize(need);
  BlockA8* xq = scratch.data();
  quantize_activations(x, T, K, xq);

  ThreadPool& pool = ThreadPool::global();
  // A few chunks per thread (uneven cores), multiples of 16 rows so the row tiles stay whole; the
  // chunks of all weights go to the pool as one job.
  int64_t rows = 0;
  for (int64_t i = 0; i < n_w; ++i) rows += ws[i].N;
  const int64_t target = int64_t(pool.num_threads()) * 4;
  int64_t chunk = (rows + target - 1) / target;
  chunk = (chunk + 15) / 16 * 16;
  struct Chunk {
    int64_t w, n0, n1;
  };
  thread_local std::vector<Chunk> tl_chunks;  // reused, like the scratch
  std::vector<Chunk>& chunks = tl_chunks;      // the workers must see the caller's, not their own
  chunks.clear();
  for (int64_t i = 0; i < n_w; ++i)
    for (int64_t n0 = 0; n0 < ws[i].N; n0 += chunk)
      chunks.push_back({i, n0, n0 + chunk < ws[i].N ? n0 + chunk : ws[i].N});
  pool.parallel_for(int64_t(chunks.size()), [&](int64_t c) {
    const Chunk& ch = chunks[size_t(c)];
    const QuantWeight& w = ws[ch.w];
    qt.matmul[int(w.format)](xq, T, w, ch.n0, ch.n1, ys[ch.w], w.N);
  });
}

void quant_matmul(const float* x, int64_t T, const QuantWeight& w, float* y) {
  quant_matmul_multi(x, T, &w, 1, &y);
}

void dequant_rows(const QuantWeight& w, const int64_t* ids, int64_t n, float* out) {
  const kernels::QuantKernelTable& qt = kernels::quant_active();
  ThreadPool::global().parallel_for(n, [&](int64_t i) { qt.dequant_row(w, ids[i], out + i * w.K); });
}

void quantize_weight(const void* src, kernels::WeightType stype, int64_t N, int64_t K, int64_t group,
                     QuantFormat format, const kernels::QuantOut& out) {
  const kernels::KernelTable& kt = kernels::active();
  const kernels::QuantKernelTable& qt = kernels::quant_active();
  std::mutex err_mutex;
  std::exception_ptr err;
  const int64_t rows_per_task = 8;
  ThreadPool::global().parallel_for((N + rows_per_task - 1) / rows_per_task, [&](int64_t task) {
    thread_local std::vector<float> row;
    try {
      const int64_t r1 = (task + 1) * rows_per_task < N ? (task + 1) * rows_per_task : N;
      for (int64_t n = task * rows_per_task; n < r1; ++n) {
        const float* w;
        if (stype == kernels::WeightType::F32) {
          w = static_cast<const float*>(src) + n * K;
        } else {
          row.resize(size_t(K));
          const uint16_t* s = static_cast<const uint16_t*>(src) + n * K;
          if (stype == kernels::WeightType::BF16)
            kt.bf16_to_f32(s, row.data(), K);
          else
            kt.f16_to_f32(s, row.data(), K);
          w = row.data();
        }
        kernels::quantize_row(qt, w, K, group, format, n, out);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lk(err_mutex);
      if (!err) err = std::current_exception();
    }
  });
  if (err) std::rethrow_exception(err);
}

}  // namespace ops
}  // namespace exaone
