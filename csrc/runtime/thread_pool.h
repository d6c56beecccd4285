// One persistent pool for the whole process. The calling thread works too; workers spin briefly
// between jobs (ops arrive microseconds apart during decode) before sleeping on a condition variable.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace exaone {

class ThreadPool {
 public:
  using TaskFn = void (*)(void* ctx, int64_t task);

  static ThreadPool& global();

  // Total threads that run a job, the caller included (>= 1).
  void set_num_threads(int n);
  int num_threads() const { return n_threads_; }

  // Runs fn(ctx, i) for every i in [0, n_tasks) and returns when all are done. Jobs from several
  // Python threads are serialised.
  void run(int64_t n_tasks, TaskFn fn, void* ctx);

  template <class F>
  void parallel_for(int64_t n_tasks, F&& f) {
    run(n_tasks, [](void* c, int64_t i) { (*static_cast<F*>(c))(i); }, &f);
  }

  ~ThreadPool();

 private:
  ThreadPool();
  void stop_workers();
  void worker_loop(int id);
  void work();

  int n_threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex job_mutex_;  // one job at a time

  // Current job, published by bumping generation_.
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int64_t n_tasks_ = 0;
  std::atomic<int64_t> next_task_{0};
  std::atomic<int> busy_workers_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stopping_{false};

  std::mutex sleep_mutex_;
  std::condition_variable wake_;
};

}  // namespace exaone
