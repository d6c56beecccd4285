// One persistent pool for the whole process. The calling thread works too. Workers spin briefly
// between jobs (ops arrive microseconds apart during decode), then yield, then sleep on a condition
// variable, so an idle or oversubscribed machine is not burned by spinning.
#pragma once
#include <atomic>
#include <type_traits>
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
    using Fn = typename std::remove_reference<F>::type;
    run(n_tasks, [](void* c, int64_t i) { (*static_cast<Fn*>(c))(i); }, &f);
  }

  ~ThreadPool();

 private:
  ThreadPool();
  void stop_workers();
  void worker_loop();
  // Claims and runs tasks of job `generation` until none are left or the job has changed.
  void work(uint32_t generation);

  int n_threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex job_mutex_;  // one job at a time

  // The current job. claim_ packs (generation << 32 | next task index): a worker can claim a task
  // only of the job it woke up for, and a job's fields stay put until all its tasks are done.
  std::atomic<TaskFn> fn_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  std::atomic<int64_t> n_tasks_{0};
  std::atomic<uint64_t> claim_{0};
  std::atomic<int64_t> done_{0};
  std::atomic<uint32_t> generation_{0};
  std::atomic<bool> stopping_{false};

  std::mutex sleep_mutex_;
  std::condition_variable wake_;
};

}  // namespace exaone
