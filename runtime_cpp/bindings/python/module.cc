// knowcache._runtime: the C++ runtime for Python. One Pybind* per file.
#include <pybind11/pybind11.h>

#include "status_py.h"

namespace py = pybind11;

namespace knowcache::python {
void PybindManifest(py::module_* m);
void PybindEntropyGate(py::module_* m);
void PybindPartition(py::module_* m);
void PybindSlotCache(py::module_* m);
void PybindCloudClient(py::module_* m);
void PybindEngine(py::module_* m);
void PybindThreads(py::module_* m);
void PybindStagedModel(py::module_* m);
}  // namespace knowcache::python

PYBIND11_MODULE(_runtime, m) {
  using namespace knowcache::python;
  m.doc() = "knowcache C++ runtime (ExecuTorch partitions, slot cache, entropy gate, cloud fallback)";
  PybindStatus(&m);
  PybindManifest(&m);
  PybindEntropyGate(&m);
  PybindPartition(&m);
  PybindSlotCache(&m);
  PybindCloudClient(&m);
  PybindStagedModel(&m);
  PybindEngine(&m);
  PybindThreads(&m);
}
