// A readable __repr__ for the plain structs the bindings expose (stats, answers):
// "EngineStats(queries=3, local=2, ..., cache=SlotCacheStats(hits=2, ...))".
#pragma once

#include <string>

#include <pybind11/pybind11.h>

namespace knowcache::python {

/// "Type(field=value, ...)" over the class's read-only properties, in binding order.
inline std::string FieldsRepr(pybind11::handle self) {
  namespace py = pybind11;
  const py::handle type = py::type::handle_of(self);
  const py::object property = py::module_::import("builtins").attr("property");
  std::string out = type.attr("__name__").cast<std::string>() + "(";
  bool first = true;
  for (auto item : type.attr("__dict__").cast<py::dict>()) {
    if (!py::isinstance(item.second, property)) continue;
    const std::string name = item.first.cast<std::string>();
    out += (first ? "" : ", ") + name + "=" +
           py::repr(self.attr(name.c_str())).cast<std::string>();
    first = false;
  }
  return out + ")";
}

}  // namespace knowcache::python
