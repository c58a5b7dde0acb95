#include <pybind11/stl.h>

#include "status_py.h"
#include "knowcache/cloud_client.h"
#include "tensor_py.h"
#include "fields_repr_py.h"

namespace py = pybind11;

namespace knowcache::python {

void PybindCloudClient(py::module_* m) {
  py::class_<CloudClientConfig>(*m, "CloudClientConfig")
      .def(py::init([](std::string base_url, std::string token, int connect_timeout_ms,
                       int read_timeout_ms, int64_t max_response_bytes, std::string ca_file,
                       bool pcm16_uploads) {
             CloudClientConfig c;
             c.base_url = std::move(base_url);
             c.token = std::move(token);
             c.connect_timeout_ms = connect_timeout_ms;
             c.read_timeout_ms = read_timeout_ms;
             c.max_response_bytes = max_response_bytes;
             c.ca_file = std::move(ca_file);
             c.pcm16_uploads = pcm16_uploads;
             return c;
           }),
           py::arg("base_url") = "", py::arg("token") = "", py::arg("connect_timeout_ms") = 1000,
           py::arg("read_timeout_ms") = 5000, py::arg("max_response_bytes") = 256ll << 20,
           py::arg("ca_file") = "", py::arg("pcm16_uploads") = true)
      .def_readwrite("base_url", &CloudClientConfig::base_url)
      .def_readwrite("token", &CloudClientConfig::token)
      .def_readwrite("connect_timeout_ms", &CloudClientConfig::connect_timeout_ms)
      .def_readwrite("read_timeout_ms", &CloudClientConfig::read_timeout_ms)
      .def_readwrite("max_response_bytes", &CloudClientConfig::max_response_bytes)
      .def_readwrite("ca_file", &CloudClientConfig::ca_file)
      .def_readwrite("pcm16_uploads", &CloudClientConfig::pcm16_uploads)
      .def("__repr__", &CloudClientConfig::ToString);

  py::class_<CloudAnswer>(*m, "CloudAnswer")
      .def_readonly("label", &CloudAnswer::label)
      .def_readonly("index", &CloudAnswer::index)
      .def_readonly("confidence", &CloudAnswer::confidence)
      .def_readonly("partition_hint", &CloudAnswer::partition_hint)
      .def_readonly("model_version", &CloudAnswer::model_version)
      .def_readonly("server_ms", &CloudAnswer::server_ms)
      .def_readonly("uplink_bytes", &CloudAnswer::uplink_bytes)
      .def("__repr__", &FieldsRepr);

  py::class_<CloudClient, std::shared_ptr<CloudClient>>(*m, "CloudClient")
      .def(py::init([](const CloudClientConfig& c) {
             return std::shared_ptr<CloudClient>(ValueOrRaise(CloudClient::Create(c)));
           }),
           py::arg("config"))
      .def("infer",
           [](CloudClient& c, const std::string& task, const py::object& x) {
             py::array a = Contiguous(x);
             TensorView view = ViewOf(a);
             return ValueOrRaise(WithoutGil([&] { return c.Infer(task, view); }));
           },
           py::arg("task"), py::arg("input"))
      .def("fetch_manifest",
           [](CloudClient& c, const std::string& task) {
             return ValueOrRaise(WithoutGil([&] { return c.FetchManifest(task); }));
           },
           py::arg("task"))
      .def("fetch_partition",
           [](CloudClient& c, const std::string& task, const std::string& id) {
             auto bytes = ValueOrRaise(WithoutGil([&] { return c.FetchPartition(task, id); }));
             return py::bytes(reinterpret_cast<const char*>(bytes.data()), bytes.size());
           },
           py::arg("task"), py::arg("id"))
      .def_property_readonly("config", &CloudClient::config);
}

}  // namespace knowcache::python
