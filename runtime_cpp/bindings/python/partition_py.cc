#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "status_py.h"
#include "knowcache/partition.h"
#include "tensor_py.h"

namespace py = pybind11;

namespace knowcache::python {

void PybindPartition(py::module_* m) {
  py::class_<CachedModel, std::shared_ptr<CachedModel>>(*m, "CachedModel");

  py::class_<Partition, CachedModel, std::shared_ptr<Partition>>(*m, "Partition")
      .def_static("from_file",
                  [](const std::string& path, const PartitionInfo* info, bool verify) {
                    PartitionLoadOptions options;
                    options.verify = verify;
                    PartitionInfo given = info ? *info : PartitionInfo{};
                    return ValueOrRaise(
                        WithoutGil([&] { return Partition::FromFile(path, given, options); }));
                  },
                  py::arg("path"), py::arg("info") = nullptr, py::arg("verify") = true)
      .def_static("from_bytes",
                  [](py::bytes data, const PartitionInfo& info, bool verify) {
                    std::string_view v = data;
                    auto bytes = std::make_shared<const std::vector<uint8_t>>(v.begin(), v.end());
                    PartitionLoadOptions options;
                    options.verify = verify;
                    return ValueOrRaise(
                        WithoutGil([&] { return Partition::FromBytes(bytes, info, options); }));
                  },
                  py::arg("data"), py::arg("info"), py::arg("verify") = true)
      .def_property_readonly("info", &Partition::info)
      .def_property_readonly("id", [](const Partition& p) { return p.info().id; })
      .def_property_readonly("resident_bytes", &Partition::resident_bytes)
      .def_property_readonly("input_dtype", [](const Partition& p) { return DTypeName(p.input_dtype()); })
      .def_property_readonly("input_shape", &Partition::input_shape)
      .def_property_readonly("num_outputs", &Partition::num_outputs)
      .def("run",
           [](Partition& p, const py::object& x) {
             py::array a = Contiguous(x);
             TensorView view = ViewOf(a);
             auto logits = ValueOrRaise(WithoutGil([&] { return p.Run(view); }));
             return py::array_t<float>(logits.size(), logits.data());
           },
           py::arg("input"), "Runs one input; returns a copy of the logits.");
}

}  // namespace knowcache::python
