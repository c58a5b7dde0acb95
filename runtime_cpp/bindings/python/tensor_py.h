// NumPy arrays <-> TensorView. The view borrows the array's memory; keep the
// returned array alive for as long as the view is used.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "status_py.h"
#include "knowcache/tensor.h"

namespace knowcache::python {

inline DType DTypeOf(const pybind11::array& a) {
  namespace py = pybind11;
  // By type number, not identity: an unpickled array carries an equal dtype
  // object that is not NumPy's singleton. Byte order must be the machine's.
  const py::dtype dt = a.dtype();
  const bool native = dt.attr("isnative").cast<bool>();
  const int num = dt.normalized_num();
  if (native) {
    if (num == py::dtype::of<float>().normalized_num()) return DType::kFloat32;
    if (num == py::dtype::of<uint8_t>().normalized_num()) return DType::kUInt8;
    if (num == py::dtype::of<int8_t>().normalized_num()) return DType::kInt8;
    if (num == py::dtype::of<int32_t>().normalized_num()) return DType::kInt32;
    if (num == py::dtype::of<int64_t>().normalized_num()) return DType::kInt64;
  }
  RaiseIfError(InvalidArgument(
      "input dtype " + std::string(py::str(dt)) +
      " is not supported; use float32, uint8, int8, int32 or int64 in the machine's byte order"
      " (e.g. x.astype(np.float32))"));
  return DType::kFloat32;
}

/// A C-contiguous array (copied only if the input was not contiguous).
inline pybind11::array Contiguous(const pybind11::object& obj) {
  namespace py = pybind11;
  if (!py::isinstance<py::array>(obj)) {
    RaiseIfError(InvalidArgument("input must be a NumPy array, got " +
                                 std::string(py::str(py::type::handle_of(obj).attr("__name__")))));
  }
  return py::array::ensure(obj, py::array::c_style);
}

inline TensorView ViewOf(const pybind11::array& a) {
  TensorView v;
  v.dtype = DTypeOf(a);
  for (pybind11::ssize_t i = 0; i < a.ndim(); ++i) v.shape.push_back(a.shape(i));
  if (v.shape.empty()) v.shape.push_back(1);
  v.data = a.data();
  v.nbytes = static_cast<size_t>(a.nbytes());
  return v;
}

}  // namespace knowcache::python
