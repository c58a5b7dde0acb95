// Layer caching for Python: staged programs run piece by piece (export,
// calibration and the cloud's recorder use this), exit gates and the
// activation cache (tests), LayerCache statistics.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "status_py.h"
#include "knowcache/exit_gate.h"
#include "knowcache/layer_cache.h"
#include "knowcache/staged_model.h"
#include "tensor_py.h"
#include "fields_repr_py.h"

namespace py = pybind11;

namespace knowcache::python {
namespace {

py::array_t<float> ToArray(const Activation& a) {
  std::vector<py::ssize_t> shape(a.shape.begin(), a.shape.end());
  py::array_t<float> out(shape);
  std::copy(a.data.begin(), a.data.end(), out.mutable_data());
  return out;
}

Activation FromArray(const py::object& x) {
  py::array a = Contiguous(x);
  TensorView v = ViewOf(a);
  if (v.dtype != DType::kFloat32) RaiseIfError(InvalidArgument("activations must be float32"));
  Activation act;
  act.shape = v.shape;
  const float* p = static_cast<const float*>(v.data);
  act.data.assign(p, p + v.nbytes / sizeof(float));
  return act;
}

ExitOutput ExitFrom(const py::array_t<float>& logits, float selector,
                    const py::array_t<float>& feature) {
  ExitOutput o;
  o.logits.assign(logits.data(), logits.data() + logits.size());
  o.selector = selector;
  o.feature.assign(feature.data(), feature.data() + feature.size());
  return o;
}

}  // namespace

void PybindStagedModel(py::module_* m) {
  py::class_<ExitOutput>(*m, "ExitOutput")
      .def(py::init(&ExitFrom), py::arg("logits"), py::arg("selector"), py::arg("feature"))
      .def_property_readonly("logits", [](const ExitOutput& o) {
        return py::array_t<float>(o.logits.size(), o.logits.data()); })
      .def_readonly("selector", &ExitOutput::selector)
      .def_property_readonly("feature", [](const ExitOutput& o) {
        return py::array_t<float>(o.feature.size(), o.feature.data()); });

  py::class_<StagedModel, std::shared_ptr<StagedModel>>(*m, "StagedModel")
      .def_static("from_file",
                  [](const std::string& path, const PartitionInfo& info, bool verify) {
                    return ValueOrRaise(
                        WithoutGil([&] { return StagedModel::FromFile(path, info, verify); }));
                  },
                  py::arg("path"), py::arg("info"), py::arg("verify") = true)
      .def_property_readonly("info", &StagedModel::info)
      .def_property_readonly("num_stages", &StagedModel::num_stages)
      .def_property_readonly("num_exits", &StagedModel::num_exits)
      .def_property_readonly("resident_bytes", &StagedModel::resident_bytes)
      .def_property_readonly("input_shape", [](const StagedModel& s) { return s.info().input.shape; })
      .def("run_stage",
           [](StagedModel& s, int stage, const py::object& x, const py::object& model_input) {
             Activation in = FromArray(x);
             Activation whole = model_input.is_none() ? Activation{} : FromArray(model_input);
             if (model_input.is_none() && s.StageReadsInput(stage)) {
               throw py::value_error("stage " + std::to_string(stage) + " of '" + s.info().id +
                                     "' also reads the model input: pass model_input=");
             }
             const TensorView view = stage == 0 ? in.view() : whole.view();
             return ToArray(ValueOrRaise(WithoutGil([&] { return s.RunStage(stage, in, view); })));
           },
           py::arg("stage"), py::arg("input"), py::arg("model_input") = py::none(),
           "Stage `stage` on `input` (the model input for stage 0, else the previous stage's "
           "output); stages that read the model input too need `model_input`.")
      .def("stage_reads_input", &StagedModel::StageReadsInput, py::arg("stage"))
      .def("run_exit",
           [](StagedModel& s, int exit, const py::object& x) {
             Activation in = FromArray(x);
             return ValueOrRaise(WithoutGil([&] { return s.RunExit(exit, in); }));
           },
           py::arg("exit"), py::arg("activation"))
      .def("run_head",
           [](StagedModel& s, const py::object& x) {
             Activation in = FromArray(x);
             auto logits = ValueOrRaise(WithoutGil([&] { return s.RunHead(in); }));
             return py::array_t<float>(logits.size(), logits.data());
           },
           py::arg("activation"))
      .def("run_all",
           [](StagedModel& s, const py::object& x) {
             const Activation input = FromArray(x);
             const TensorView view = input.view();
             Activation act = input;
             std::vector<ExitOutput> exits;
             std::vector<float> logits;
             RaiseIfError(WithoutGil([&]() -> Status {
               const auto& st = s.info().staged;
               size_t next = 0;
               for (int i = 0; i < s.num_stages(); ++i) {
                 KC_ASSIGN_OR_RETURN(act, s.RunStage(i, act, view));
                 while (next < st.exits.size() && st.exits[next].after_stage == i) {
                   KC_ASSIGN_OR_RETURN(ExitOutput o, s.RunExit(static_cast<int>(next++), act));
                   exits.push_back(std::move(o));
                 }
               }
               KC_ASSIGN_OR_RETURN(logits, s.RunHead(act));
               return Status::Ok();
             }));
             return py::make_tuple(exits, py::array_t<float>(logits.size(), logits.data()));
           },
           py::arg("input"),
           "Every stage and every exit (no gating): (exit outputs, final logits).");

  py::class_<ExitVerdict>(*m, "ExitVerdict")
      .def_readonly("hit", &ExitVerdict::hit)
      .def_readonly("index", &ExitVerdict::index)
      .def_readonly("confidence", &ExitVerdict::confidence)
      .def_readonly("score", &ExitVerdict::score)
      .def("__repr__", &FieldsRepr);

  py::class_<ActivationCacheStats>(*m, "ActivationCacheStats")
      .def_readonly("lookups", &ActivationCacheStats::lookups)
      .def_readonly("hits", &ActivationCacheStats::hits)
      .def_readonly("inserts", &ActivationCacheStats::inserts)
      .def_readonly("evictions", &ActivationCacheStats::evictions)
      .def_readonly("entries", &ActivationCacheStats::entries)
      .def_readonly("memory_bytes", &ActivationCacheStats::memory_bytes)
      .def("__repr__", &FieldsRepr);

  py::class_<ExitGate>(*m, "ExitGate")
      .def(py::init([](const std::string& kind, int max_entries, int64_t max_bytes) {
             ActivationCacheConfig a{max_entries, max_bytes};
             return ValueOrRaise(MakeExitGate(ValueOrRaise(ParseExitGateKind(kind)), a));
           }),
           py::arg("kind"), py::arg("max_entries") = 512, py::arg("max_bytes") = 1 << 20)
      .def_property_readonly("kind", [](const ExitGate& g) { return ExitGateKindName(g.kind()); })
      .def("evaluate",
           [](ExitGate& g, int exit, const ExitOutput& out, double threshold) {
             return ValueOrRaise(g.Evaluate(exit, out, threshold));
           },
           py::arg("exit"), py::arg("output"), py::arg("threshold"))
      .def("observe", &ExitGate::Observe, py::arg("exit"), py::arg("output"),
           py::arg("final_index"))
      .def("activation_stats", [](const ExitGate& g) {
        auto* a = dynamic_cast<const ActivationCache*>(&g);
        if (!a) RaiseIfError(FailedPrecondition("only the activation cache keeps entries"));
        return a->Stats();
      });
  m->def("activation_entry_bytes", &ActivationCache::EntryBytes, py::arg("dim"));

  py::class_<LayerCacheStats>(*m, "LayerCacheStats")
      .def_readonly("queries", &LayerCacheStats::queries)
      .def_readonly("exit_hits", &LayerCacheStats::exit_hits)
      .def_readonly("full_runs", &LayerCacheStats::full_runs)
      .def_readonly("flops", &LayerCacheStats::flops)
      .def_readonly("activation", &LayerCacheStats::activation)
      .def("__repr__", &FieldsRepr);
}

}  // namespace knowcache::python
