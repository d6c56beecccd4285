// Runtime controls: thread count and kernel (ISA) selection.
#include <pybind11/stl.h>

#include <atomic>
#include <memory>

#include "../kernels/dispatch.h"
#include "../runtime/thread_pool.h"
#include "checks.h"

namespace exaone {
namespace bind {

namespace {
// Runs `jobs` back-to-back jobs of 1..max_tasks tasks and returns how many tasks did not run exactly
// once: a check of the pool's hand-over between jobs (tests only).
int64_t pool_selftest(int64_t jobs, int64_t max_tasks) {
  if (jobs < 0 || max_tasks < 1 || max_tasks > 4096) throw py::value_error("bad selftest arguments");
  py::gil_scoped_release nogil;
  std::unique_ptr<std::atomic<int>[]> hits(new std::atomic<int>[static_cast<size_t>(max_tasks)]);
  int64_t wrong = 0;
  for (int64_t j = 0; j < jobs; ++j) {
    const int64_t n = 1 + j % max_tasks;
    for (int64_t i = 0; i < n; ++i) hits[size_t(i)].store(0);
    ThreadPool::global().parallel_for(n, [&](int64_t i) { hits[size_t(i)].fetch_add(1); });
    for (int64_t i = 0; i < n; ++i) wrong += hits[size_t(i)].load() != 1;
  }
  return wrong;
}
}  // namespace

void register_runtime(py::module_& m) {
  m.def("set_num_threads", [](int n) { ThreadPool::global().set_num_threads(n); }, py::arg("n"),
        "Threads used by every op (the calling thread included).");
  m.def("get_num_threads", [] { return ThreadPool::global().num_threads(); });
  m.def("isa", [] { return std::string(kernels::active_name()); },
        "Name of the kernels in use (as set_isa takes it).");
  m.def("available_isas", &kernels::available_isas,
        "Kernel variants this build has and this CPU can run, best last.");
  m.def("set_isa", &kernels::set_isa, py::arg("name"),
        "Force a kernel variant ('scalar', 'avx2', 'avxvnni', 'avx512', 'neon'; 'avx2' with the plain "
        "AVX2 integer kernels); ValueError if this CPU cannot run it.");
  m.def("_pool_selftest", &pool_selftest, py::arg("jobs"), py::arg("max_tasks"));
}

}  // namespace bind
}  // namespace exaone
