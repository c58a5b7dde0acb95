#include "status_py.h"
#include "knowcache/threads.h"

namespace py = pybind11;

namespace knowcache::python {

void PybindThreads(py::module_* m) {
  m->def("set_compute_threads",
         [](int n) { RaiseIfError(WithoutGil([n] { return SetComputeThreads(n); })); },
         py::arg("n"),
         "Sets how many threads ExecuTorch's kernels use in this process (1 = one device core).");
}

}  // namespace knowcache::python
