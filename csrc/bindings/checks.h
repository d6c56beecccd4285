// Boundary checks: every array that crosses into C++ is validated here once (dtype, rank, shape,
// C-contiguity, writability) and rejected with ValueError; ops then trust their inputs.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace exaone {
namespace bind {

namespace py = pybind11;

inline std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// Checks a's dtype and rank (ndim < 0: any rank >= 1) and returns it; dims of -1 in `shape` are free.
template <class T>
py::array checked(const py::array& a, const char* name, int ndim, std::vector<int64_t> shape = {},
                  bool writable = false) {
  if (!a.dtype().is(py::dtype::of<T>()))
    throw py::value_error(std::string(name) + ": expected dtype " +
                          std::string(py::str(py::dtype::of<T>())) + ", got " +
                          std::string(py::str(a.dtype())));
  if ((ndim >= 0 && a.ndim() != ndim) || (ndim < 0 && a.ndim() < 1))
    throw py::value_error(std::string(name) + ": expected " +
                          (ndim >= 0 ? std::to_string(ndim) : std::string(">= 1")) +
                          " dimensions, got shape " + shape_str(a));
  for (size_t i = 0; i < shape.size(); ++i)
    if (shape[i] >= 0 && a.shape(py::ssize_t(i)) != shape[i])
      throw py::value_error(std::string(name) + ": dimension " + std::to_string(i) + " must be " +
                            std::to_string(shape[i]) + ", got shape " + shape_str(a));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + ": array must be C-contiguous");
  if (writable && !a.writeable())
    throw py::value_error(std::string(name) + ": array must be writable");
  if (a.size() == 0) throw py::value_error(std::string(name) + ": array is empty");
  return a;
}

template <class T>
const T* cptr(const py::array& a) {
  return static_cast<const T*>(a.data());
}
template <class T>
T* mptr(py::array& a) {
  return static_cast<T*>(a.mutable_data());
}

inline std::vector<py::ssize_t> shape_of(const py::array& a) {
  return std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim());
}

}  // namespace bind
}  // namespace exaone
