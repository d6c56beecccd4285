#include "thread_pool.h"

#include <chrono>
#include <stdexcept>
#include <string>

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
constexpr int kPauseSpins = 2000;                          // busy-wait first: the next op is near
constexpr auto kYieldFor = std::chrono::microseconds(300);  // then give the core away, then sleep
constexpr uint64_t kClosed = 0xffffffffu;  // claim index meaning "no task to take"
}  // namespace

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
  for (int i = 1; i < n; ++i) workers_.emplace_back([this] { worker_loop(); });
}

void ThreadPool::work(uint32_t generation) {
  for (;;) {
    uint64_t cur = claim_.load();
    if (uint32_t(cur >> 32) != generation) return;
    const int64_t i = int64_t(cur & 0xffffffffu);
    if (i >= n_tasks_.load()) return;  // also true for kClosed
    if (!claim_.compare_exchange_weak(cur, cur + 1)) continue;
    // Task i of this job is now ours, so the job (and fn_/ctx_) cannot change until we finish it.
    fn_.load()(ctx_.load(), i);
    done_.fetch_add(1);
  }
}

void ThreadPool::worker_loop() {
  uint32_t seen = generation_.load();
  for (;;) {
    int spins = 0;
    auto yield_start = std::chrono::steady_clock::time_point();
    while (generation_.load(std::memory_order_acquire) == seen && !stopping_.load()) {
      if (++spins < kPauseSpins) {
        EXAONE_PAUSE();
        continue;
      }
      const auto now = std::chrono::steady_clock::now();
      if (yield_start == std::chrono::steady_clock::time_point()) yield_start = now;
      if (now - yield_start < kYieldFor) {
        std::this_thread::yield();
        continue;
      }
      std::unique_lock<std::mutex> lk(sleep_mutex_);
      wake_.wait(lk, [&] { return generation_.load() != seen || stopping_.load(); });
    }
    if (stopping_.load()) return;
    seen = generation_.load(std::memory_order_acquire);
    work(seen);
  }
}

void ThreadPool::run(int64_t n_tasks, TaskFn fn, void* ctx) {
  if (n_tasks <= 0) return;
  if (n_tasks >= int64_t(kClosed)) throw std::invalid_argument("too many tasks for one job");
  std::lock_guard<std::mutex> job(job_mutex_);
  if (n_threads_ == 1 || n_tasks == 1) {
    for (int64_t i = 0; i < n_tasks; ++i) fn(ctx, i);
    return;
  }
  const uint32_t generation = generation_.load(std::memory_order_relaxed) + 1;
  // Close the claim word first: a worker still inside the previous job's work() would otherwise
  // read the new n_tasks_ with its old claim and run a task of this job twice (its CAS now fails).
  claim_.store((uint64_t(generation) << 32) | kClosed);
  fn_.store(fn);
  ctx_.store(ctx);
  n_tasks_.store(n_tasks);
  done_.store(0);
  claim_.store(uint64_t(generation) << 32);  // open: tasks 0.. can be claimed
  {
    // Taking the lock orders the bump against a worker that is about to sleep.
    std::lock_guard<std::mutex> lk(sleep_mutex_);
    generation_.store(generation, std::memory_order_release);
  }
  wake_.notify_all();
  work(generation);
  // Wait only for tasks other threads have claimed; yield now and then in case they were preempted.
  for (int spins = 0; done_.load(std::memory_order_acquire) != n_tasks; ++spins) {
    if (spins < kPauseSpins)
      EXAONE_PAUSE();
    else
      std::this_thread::yield();
  }
}

}  // namespace exaone
