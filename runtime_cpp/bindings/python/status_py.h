// Status -> Python exception, the only place the core's errors become throws.
#pragma once

#include <pybind11/pybind11.h>

#include "knowcache/status.h"

namespace knowcache::python {

void PybindStatus(pybind11::module_* m);
/// Raises the Python exception that matches `status` (no-op when ok).
void RaiseIfError(const Status& status);

/// Runs `f` with the GIL released and returns its result; the GIL is held
/// again when the caller sees the result (so it may raise).
template <typename F>
auto WithoutGil(F&& f) -> decltype(f()) {
  pybind11::gil_scoped_release release;
  return f();
}

template <typename T>
T ValueOrRaise(StatusOr<T> result) {
  RaiseIfError(result.status());
  return std::move(result).value();
}

}  // namespace knowcache::python
