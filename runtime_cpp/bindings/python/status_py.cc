#include "status_py.h"

#include <map>

namespace py = pybind11;

namespace knowcache::python {
namespace {

std::map<StatusCode, PyObject*>& Classes() {
  static std::map<StatusCode, PyObject*> classes;
  return classes;
}

PyObject* NewClass(py::module_* m, const char* name, PyObject* bases, const char* doc) {
  std::string qualified = std::string("knowcache._runtime.") + name;
  PyObject* cls = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, bases, nullptr);
  if (cls == nullptr) throw py::error_already_set();
  m->add_object(name, py::handle(cls));
  return cls;
}

}  // namespace

void PybindStatus(py::module_* m) {
  PyObject* base = NewClass(m, "KnowcacheError", PyExc_RuntimeError,
                            "Base class of every error the knowcache runtime raises.");
  auto with = [&](PyObject* extra) {
    return extra ? PyTuple_Pack(2, base, extra) : PyTuple_Pack(1, base);
  };
  auto& c = Classes();
  c[StatusCode::kInvalidArgument] =
      NewClass(m, "InvalidInputError", with(PyExc_ValueError),
               "Bad input or configuration: wrong shape, dtype, threshold...");
  c[StatusCode::kNotFound] = NewClass(m, "NotFoundError", with(PyExc_LookupError),
                                      "A file, partition or manifest entry does not exist.");
  c[StatusCode::kCorrupt] = NewClass(m, "CorruptPartitionError", with(nullptr),
                                     "Bytes failed verification (sha256, size, .pte parse).");
  c[StatusCode::kUnavailable] =
      NewClass(m, "CloudUnavailableError", with(nullptr), "The cloud could not be reached.");
  c[StatusCode::kDeadlineExceeded] =
      NewClass(m, "CloudTimeoutError", with(nullptr), "The cloud did not answer in time.");
  c[StatusCode::kResourceExhausted] =
      NewClass(m, "ResourceExhaustedError", with(nullptr), "A slot, byte budget or size limit would be exceeded.");
  c[StatusCode::kFailedPrecondition] =
      NewClass(m, "FailedPreconditionError", with(nullptr), "The call is not allowed in the current state.");
  c[StatusCode::kProtocol] =
      NewClass(m, "ProtocolError", with(nullptr), "A peer answered something unintelligible.");
  c[StatusCode::kInternal] = base;
}

void RaiseIfError(const Status& status) {
  if (status.ok()) return;
  auto& c = Classes();
  auto it = c.find(status.code());
  PyObject* cls = it == c.end() ? PyExc_RuntimeError : it->second;
  PyErr_SetString(cls, status.message().c_str());
  throw py::error_already_set();
}

}  // namespace knowcache::python
