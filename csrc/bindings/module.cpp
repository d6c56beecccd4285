// exaone_cpu._core: the private compiled module; exaone_cpu re-exports what users need.
#include <pybind11/pybind11.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "../kernels/dispatch.h"

namespace exaone {
namespace bind {
void register_ops(pybind11::module_& m);
void register_runtime(pybind11::module_& m);
void register_quant(pybind11::module_& m);
void register_sampling(pybind11::module_& m);
}  // namespace bind
}  // namespace exaone

namespace {

// Every forward step allocates its activations afresh (a prefill chunk's are megabytes each). glibc
// serves blocks that large with mmap and gives them back with munmap, or trims them off the heap's
// top, so every step faulted its pages in and had the kernel zero them again: 15-20 % of a
// 512-token prefill on the development machine. With EXAONE_CPU_MALLOC=keep (the default), blocks
// under 64 MB come from the heap and up to 256 MB of free heap top is kept for the next step;
// "system" leaves malloc as it is, as does any malloc tuning of the user's own (glibc's MALLOC_*_
// variables or GLIBC_TUNABLES). Returns what applies: "keep", "system", "user" or "n/a" (not glibc).
std::string tune_malloc() {
  const char* opt = std::getenv("EXAONE_CPU_MALLOC");
  const std::string mode = opt && *opt ? opt : "keep";
  if (mode != "keep" && mode != "system")
    throw std::invalid_argument("EXAONE_CPU_MALLOC must be 'keep' or 'system', got '" + mode + "'");
#if defined(__GLIBC__)
  if (mode == "system") return mode;
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") || std::getenv("MALLOC_TRIM_THRESHOLD_") ||
      std::getenv("MALLOC_TOP_PAD_") || (tunables && std::strstr(tunables, "malloc")))
    return "user";
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  return mode;
#else
  return "n/a";
#endif
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "exaone_cpu compiled kernels";
  exaone::bind::register_runtime(m);
  exaone::bind::register_ops(m);
  exaone::bind::register_quant(m);
  exaone::bind::register_sampling(m);
  // Apply EXAONE_CPU_ISA and EXAONE_CPU_MALLOC now so a bad value fails the import with its message.
  exaone::kernels::active();
  const std::string malloc_mode = tune_malloc();
  m.def("malloc_mode", [malloc_mode] { return malloc_mode; },
        "How malloc was set up at import (EXAONE_CPU_MALLOC): 'keep', 'system', 'user' or 'n/a'.");
}
