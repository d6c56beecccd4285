// exaone_cpu._core: the private compiled module; exaone_cpu re-exports what users need.
#include <pybind11/pybind11.h>

#include "../kernels/dispatch.h"

namespace exaone {
namespace bind {
void register_ops(pybind11::module_& m);
void register_runtime(pybind11::module_& m);
void register_quant(pybind11::module_& m);
void register_sampling(pybind11::module_& m);
}  // namespace bind
}  // namespace exaone

PYBIND11_MODULE(_core, m) {
  m.doc() = "exaone_cpu compiled kernels";
  exaone::bind::register_runtime(m);
  exaone::bind::register_ops(m);
  exaone::bind::register_quant(m);
  exaone::bind::register_sampling(m);
  // Apply EXAONE_CPU_ISA now so a bad value fails the import with its message, not a later call.
  exaone::kernels::active();
}
