#include <pybind11/stl.h>

#include "status_py.h"
#include "knowcache/slot_cache.h"
#include "fields_repr_py.h"

namespace py = pybind11;

namespace knowcache::python {

void PybindSlotCache(py::module_* m) {
  py::class_<SlotCacheConfig>(*m, "SlotCacheConfig")
      .def(py::init([](int num_slots, int64_t byte_budget) {
             return SlotCacheConfig{num_slots, byte_budget};
           }),
           py::arg("num_slots") = 2, py::arg("byte_budget") = 64ll << 20)
      .def_readwrite("num_slots", &SlotCacheConfig::num_slots)
      .def_readwrite("byte_budget", &SlotCacheConfig::byte_budget)
      .def("__repr__", &SlotCacheConfig::ToString);

  py::class_<SlotCacheStats>(*m, "SlotCacheStats")
      .def_readonly("hits", &SlotCacheStats::hits)
      .def_readonly("misses", &SlotCacheStats::misses)
      .def_readonly("installs", &SlotCacheStats::installs)
      .def_readonly("evictions", &SlotCacheStats::evictions)
      .def_readonly("resident_bytes", &SlotCacheStats::resident_bytes)
      .def_readonly("slots_used", &SlotCacheStats::slots_used)
      .def("__repr__", &FieldsRepr);

  py::class_<SlotCache>(*m, "SlotCache")
      .def(py::init([](const SlotCacheConfig& c) { return ValueOrRaise(SlotCache::Create(c)); }),
           py::arg("config"))
      .def("get", &SlotCache::Get, py::arg("id"))
      .def("peek", &SlotCache::Peek, py::arg("id"))
      .def("__contains__", &SlotCache::Contains)
      .def("install",
           [](SlotCache& c, std::shared_ptr<CachedModel> model, bool pinned) {
             RaiseIfError(c.Install(std::move(model), pinned));
           },
           py::arg("model"), py::arg("pinned") = false)
      .def("set_pinned", [](SlotCache& c, const std::string& id, bool pinned) {
             RaiseIfError(c.SetPinned(id, pinned));
           }, py::arg("id"), py::arg("pinned"))
      .def("remove", [](SlotCache& c, const std::string& id) { RaiseIfError(c.Remove(id)); },
           py::arg("id"))
      .def("ids", &SlotCache::Ids, "Cached ids, most recently used first.")
      .def("stats", &SlotCache::Stats)
      .def_property_readonly("config", &SlotCache::config);
}

}  // namespace knowcache::python
