#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "status_py.h"
#include "knowcache/entropy_gate.h"

namespace py = pybind11;

namespace knowcache::python {

void PybindEntropyGate(py::module_* m) {
  py::class_<GateDecision>(*m, "GateDecision")
      .def_readonly("accept", &GateDecision::accept)
      .def_readonly("index", &GateDecision::index)
      .def_readonly("entropy", &GateDecision::entropy)
      .def_readonly("max_prob", &GateDecision::max_prob)
      .def_readonly("margin", &GateDecision::margin)
      .def_readonly("is_other", &GateDecision::is_other)
      .def_property_readonly("probs", [](const GateDecision& d) {
        return py::array_t<float>(d.probs.size(), d.probs.data());
      })
      .def("__repr__", [](const GateDecision& d) {
        return "GateDecision(accept=" + std::string(d.accept ? "True" : "False") +
               ", index=" + std::to_string(d.index) + ", entropy=" + std::to_string(d.entropy) + ")";
      });

  m->def("gate_evaluate",
         [](py::array_t<float, py::array::c_style | py::array::forcecast> logits, float threshold,
            int other_index) {
           std::vector<float> v(logits.data(), logits.data() + logits.size());
           return ValueOrRaise(EntropyGate::Evaluate(v, threshold, other_index));
         },
         py::arg("logits"), py::arg("threshold"), py::arg("other_index") = -1,
         "Softmax, normalized entropy H(p)/log(C) and the accept decision.");
}

}  // namespace knowcache::python
