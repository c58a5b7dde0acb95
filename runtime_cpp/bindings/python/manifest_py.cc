#include <pybind11/stl.h>

#include "status_py.h"
#include "knowcache/manifest.h"
#include "knowcache/sha256.h"
#include "knowcache/signature.h"
#include "fields_repr_py.h"
#include "tensor_py.h"

namespace py = pybind11;

namespace knowcache::python {

void PybindManifest(py::module_* m) {
  py::class_<InputSpec>(*m, "InputSpec")
      .def_property_readonly("dtype", [](const InputSpec& s) { return DTypeName(s.dtype); })
      .def_readonly("shape", &InputSpec::shape)
      .def_readonly("sample_rate", &InputSpec::sample_rate)
      .def_property_readonly("image_size", [](const InputSpec& s) {
        return std::vector<int>{s.image_channels, s.image_height, s.image_width};
      })
      .def_property_readonly("value_range", [](const InputSpec& s) -> py::object {
        if (!s.has_value_range()) return py::none();
        return py::make_tuple(s.value_low, s.value_high);
      })
      .def(
          "check",
          [](const InputSpec& s, const py::object& x) {
            py::array a = Contiguous(x);
            RaiseIfError(s.Check(ViewOf(a)));
          },
          py::arg("input"),
          "Raises ValueError where the input breaks the spec (dtype, shape, a value outside "
          "value_range), with the engine's own message.")
      .def("__repr__", &FieldsRepr);

  py::class_<PartitionInfo>(*m, "PartitionInfo")
      .def_readonly("id", &PartitionInfo::id)
      .def_readonly("version", &PartitionInfo::version)
      .def_static("parse",
                  [](const std::string& text) { return ValueOrRaise(PartitionInfo::Parse(text)); },
                  py::arg("text"), "Parses and validates one manifest entry (JSON text).")
      .def_property_readonly("role", [](const PartitionInfo& p) { return PartitionRoleName(p.role); })
      .def_readonly("file", &PartitionInfo::file)
      .def_readonly("labels", &PartitionInfo::labels)
      .def_readonly("other_index", &PartitionInfo::other_index)
      .def_readonly("input", &PartitionInfo::input)
      .def_readonly("threshold", &PartitionInfo::threshold)
      .def_readonly("bytes", &PartitionInfo::bytes)
      .def_readonly("sha256", &PartitionInfo::sha256)
      .def("__repr__", [](const PartitionInfo& p) {
        return "PartitionInfo(id='" + p.id + "', role='" + PartitionRoleName(p.role) + "', labels=" +
               std::to_string(p.labels.size()) + ", bytes=" + std::to_string(p.bytes) + ")";
      });

  py::class_<Manifest>(*m, "Manifest")
      .def_static("parse", [](const std::string& text) { return ValueOrRaise(Manifest::Parse(text)); },
                  py::arg("text"), "Parses and validates manifest JSON text.")
      .def_static("load", [](const std::string& path) { return ValueOrRaise(Manifest::Load(path)); },
                  py::arg("path"), "Reads and validates a manifest.json file.")
      .def_readonly("schema_version", &Manifest::schema_version)
      .def_readonly("task", &Manifest::task)
      .def_readonly("version", &Manifest::version)
      .def_readonly("labels", &Manifest::labels)
      .def_readonly("private_labels", &Manifest::private_labels)
      .def_readonly("partitions", &Manifest::partitions)
      .def_static("load_signed",
                  [](const std::string& directory, std::vector<std::string> trusted_keys) {
                    SignatureConfig config;
                    config.trusted_keys = std::move(trusted_keys);
                    auto verifier = ValueOrRaise(ManifestVerifier::Create(config));
                    return ValueOrRaise(verifier.LoadSigned(directory));
                  },
                  py::arg("directory"), py::arg("trusted_keys"),
                  "Reads directory/manifest.json; with trusted keys (base64 Ed25519 public "
                  "keys) it must verify against directory/manifest.sig.")
      .def_readonly("directory", &Manifest::directory)
      .def_readonly("signed_by", &Manifest::signed_by,
                    "Id of the trusted key whose signature was verified; '' when unchecked.")
      .def("find", [](const Manifest& mf, const std::string& id) -> py::object {
        const PartitionInfo* p = mf.Find(id);
        return p ? py::cast(*p) : py::none();
      }, py::arg("id"))
      .def("ids_with_role",
           [](const Manifest& mf, const std::string& role) {
             return mf.IdsWithRole(ValueOrRaise(ParsePartitionRole(role)));
           },
           py::arg("role"), "Ids of the partitions with this role, in manifest order.")
      .def("path_of", &Manifest::PathOf, py::arg("info"));

  m->def("sha256_hex", [](py::bytes data) {
    std::string_view v = data;
    return Sha256Hex(v.data(), v.size());
  }, py::arg("data"), "SHA-256 of bytes as lowercase hex (OpenSSL).");
}

}  // namespace knowcache::python
