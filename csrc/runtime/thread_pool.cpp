#include "thread_pool.h"

#include <stdexcept>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#include <immintrin.h>
#define EXAONE_PAUSE() _mm_pause()
#elif defined(__aarch64__) && !defined(_MSC_VER)
#define EXAONE_PAUSE() __asm__ __volatile__("yield")
#else
#define EXAONE_PAUSE() std::this_thread::yield()
#endif

namespace exaone {

namespace {
constexpr int kSpinIterations = 1 << 16;
}

ThreadPool& ThreadPool::global() {
  static ThreadPool pool;
  return pool;
}

ThreadPool::ThreadPool() {
  const unsigned hw = std::thread::hardware_concurrency();
  set_num_threads(hw ? int(hw) : 1);
}

ThreadPool::~ThreadPool() { stop_workers(); }

void ThreadPool::stop_workers() {
  {
    std::lock_guard<std::mutex> lk(sleep_mutex_);
    stopping_.store(true);
  }
  wake_.notify_all();
  for (auto& w : workers_) w.join();
  workers_.clear();
  stopping_.store(false);
}

void ThreadPool::set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("threads must be >= 1, got " + std::to_string(n));
  std::lock_guard<std::mutex> job(job_mutex_);
  if (n == n_threads_ && int(workers_.size()) == n - 1) return;
  stop_workers();
  n_threads_ = n;
  for (int i = 1; i < n; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

void ThreadPool::work() {
  for (;;) {
    const int64_t i = next_task_.fetch_add(1, std::memory_order_relaxed);
    if (i >= n_tasks_) break;
    fn_(ctx_, i);
  }
}

void ThreadPool::worker_loop(int) {
  uint64_t seen = generation_.load();
  for (;;) {
    int spins = 0;
    while (generation_.load(std::memory_order_acquire) == seen && !stopping_.load()) {
      if (++spins < kSpinIterations) {
        EXAONE_PAUSE();
        continue;
      }
      std::unique_lock<std::mutex> lk(sleep_mutex_);
      wake_.wait(lk, [&] { return generation_.load() != seen || stopping_.load(); });
    }
    if (stopping_.load()) return;
    seen = generation_.load(std::memory_order_acquire);
    work();
    busy_workers_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::run(int64_t n_tasks, TaskFn fn, void* ctx) {
  if (n_tasks <= 0) return;
  std::lock_guard<std::mutex> job(job_mutex_);
  if (n_threads_ == 1 || n_tasks == 1) {
    for (int64_t i = 0; i < n_tasks; ++i) fn(ctx, i);
    return;
  }
  fn_ = fn;
  ctx_ = ctx;
  n_tasks_ = n_tasks;
  next_task_.store(0, std::memory_order_relaxed);
  busy_workers_.store(int(workers_.size()), std::memory_order_relaxed);
  {
    // Taking the lock orders the bump against a worker that is about to sleep.
    std::lock_guard<std::mutex> lk(sleep_mutex_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  wake_.notify_all();
  work();
  while (busy_workers_.load(std::memory_order_acquire) != 0) EXAONE_PAUSE();
}

}  // namespace exaone
