// Runtime controls: thread count and kernel (ISA) selection.
#include <pybind11/stl.h>

#include "../kernels/dispatch.h"
#include "../runtime/thread_pool.h"
#include "checks.h"

namespace exaone {
namespace bind {

void register_runtime(py::module_& m) {
  m.def("set_num_threads", [](int n) { ThreadPool::global().set_num_threads(n); }, py::arg("n"),
        "Threads used by every op (the calling thread included).");
  m.def("get_num_threads", [] { return ThreadPool::global().num_threads(); });
  m.def("isa", [] { return std::string(kernels::active().name); }, "Name of the kernels in use.");
  m.def("available_isas", &kernels::available_isas,
        "Kernel variants this build has and this CPU can run, best last.");
  m.def("set_isa", &kernels::set_isa, py::arg("name"),
        "Force a kernel variant ('scalar', 'avx2'); ValueError if this CPU cannot run it.");
}

}  // namespace bind
}  // namespace exaone
