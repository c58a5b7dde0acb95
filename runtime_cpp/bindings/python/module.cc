// knowcache._runtime: the C++ runtime for Python. One Pybind* per file.
#include <pybind11/pybind11.h>

#include "errors.h"

namespace py = pybind11;

namespace knowcache::python {
void PybindManifest(py::module_* m);
void PybindGate(py::module_* m);
void PybindPartition(py::module_* m);
void PybindSlotCache(py::module_* m);
void PybindCloudClient(py::module_* m);
void PybindEngine(py::module_* m);
void PybindThreads(py::module_* m);
void PybindStaged(py::module_* m);
}  // namespace knowcache::python

PYBIND11_MODULE(_runtime, m) {
  using namespace knowcache::python;
  m.doc() = "knowcache C++ runtime (ExecuTorch partitions, slot cache, entropy gate, cloud fallback)";
  PybindErrors(&m);
  PybindManifest(&m);
  PybindGate(&m);
  PybindPartition(&m);
  PybindSlotCache(&m);
  PybindCloudClient(&m);
  PybindStaged(&m);
  PybindEngine(&m);
  PybindThreads(&m);
}
