#include <pybind11/stl.h>

#include "status_py.h"
#include "knowcache/engine.h"
#include "knowcache/partition.h"
#include "tensor_py.h"
#include "fields_repr_py.h"

namespace py = pybind11;

namespace knowcache::python {

void PybindEngine(py::module_* m) {
  py::class_<EngineConfig>(*m, "EngineConfig")
      .def(py::init([](std::string task, const SlotCacheConfig& cache,
                       const CloudClientConfig& cloud, bool fetch_hints, int max_local_attempts,
                       float threshold_override, int admit_after_hints, int hint_window,
                       std::string exit_gate, int activation_entries, int64_t activation_bytes,
                       float private_share, bool local_only,
                       std::vector<std::string> trusted_keys, bool require_signature,
                       const std::string& split, int split_cut) {
             EngineConfig c;
             c.task = std::move(task);
             c.cache = cache;
             c.cloud = cloud;
             c.fetch_hints = fetch_hints;
             c.max_local_attempts = max_local_attempts;
             c.threshold_override = threshold_override;
             c.admit_after_hints = admit_after_hints;
             c.hint_window = hint_window;
             c.layer_cache.gate = std::move(exit_gate);
             c.layer_cache.activation.max_entries_per_exit = activation_entries;
             c.layer_cache.activation.max_bytes = activation_bytes;
             c.private_share = private_share;
             c.local_only = local_only;
             c.signature.trusted_keys = std::move(trusted_keys);
             c.signature.require_signature = require_signature;
             c.split = {ValueOrRaise(ParseSplitMode(split)), split_cut};
             return c;
           }),
           py::arg("task"), py::arg("cache") = SlotCacheConfig{},
           py::arg("cloud") = CloudClientConfig{}, py::arg("fetch_hints") = true,
           py::arg("max_local_attempts") = 1, py::arg("threshold_override") = -1.0f,
           py::arg("admit_after_hints") = 1, py::arg("hint_window") = 8,
           py::arg("exit_gate") = "learned", py::arg("activation_entries") = 512,
           py::arg("activation_bytes") = 1 << 20, py::arg("private_share") = 0.2f,
           py::arg("local_only") = false,
           py::arg("trusted_keys") = std::vector<std::string>{},
           py::arg("require_signature") = false, py::arg("split") = "off",
           py::arg("split_cut") = 0)
      .def_readwrite("task", &EngineConfig::task)
      .def_readwrite("cache", &EngineConfig::cache)
      .def_readwrite("cloud", &EngineConfig::cloud)
      .def_readwrite("fetch_hints", &EngineConfig::fetch_hints)
      .def_readwrite("max_local_attempts", &EngineConfig::max_local_attempts)
      .def_readwrite("threshold_override", &EngineConfig::threshold_override)
      .def_readwrite("admit_after_hints", &EngineConfig::admit_after_hints)
      .def_readwrite("hint_window", &EngineConfig::hint_window)
      .def_readwrite("private_share", &EngineConfig::private_share)
      .def_readwrite("local_only", &EngineConfig::local_only)
      .def_property_readonly("exit_gate", [](const EngineConfig& c) { return c.layer_cache.gate; })
      .def_property_readonly("trusted_keys",
                             [](const EngineConfig& c) { return c.signature.trusted_keys; })
      .def_property_readonly("require_signature",
                             [](const EngineConfig& c) { return c.signature.require_signature; })
      .def_property_readonly("split", [](const EngineConfig& c) { return SplitModeName(c.split.mode); })
      .def_property_readonly("split_cut", [](const EngineConfig& c) { return c.split.cut_stage; })
      .def("__repr__", &EngineConfig::ToString);

  py::class_<InferenceResult>(*m, "InferenceResult")
      .def_readonly("label", &InferenceResult::label)
      .def_readonly("index", &InferenceResult::index)
      .def_readonly("confidence", &InferenceResult::confidence)
      .def_readonly("entropy", &InferenceResult::entropy)
      .def_property_readonly("source", [](const InferenceResult& r) { return AnswerSourceName(r.source); })
      .def_readonly("partition_id", &InferenceResult::partition_id)
      .def_readonly("partition_hint", &InferenceResult::partition_hint)
      .def_readonly("degraded_reason", &InferenceResult::degraded_reason)
      .def_readonly("local_attempts", &InferenceResult::local_attempts)
      .def_readonly("local_us", &InferenceResult::local_us)
      .def_readonly("network_us", &InferenceResult::network_us)
      .def_readonly("total_us", &InferenceResult::total_us)
      .def_readonly("uplink_bytes", &InferenceResult::uplink_bytes)
      .def_property_readonly("uplink", [](const InferenceResult& r) { return UplinkName(r.uplink); })
      .def_readonly("split_reason", &InferenceResult::split_reason)
      .def_readonly("exit_index", &InferenceResult::exit_index)
      .def_readonly("flops", &InferenceResult::flops)
      .def_readonly("lookup_us", &InferenceResult::lookup_us)
      .def_readonly("is_private", &InferenceResult::is_private)
      .def_readonly("private_mass", &InferenceResult::private_mass)
      .def_readonly("kept_reason", &InferenceResult::kept_reason)
      .def("__repr__", [](const InferenceResult& r) {
        return "InferenceResult(label='" + r.label + "', source='" + AnswerSourceName(r.source) +
               "', confidence=" + std::to_string(r.confidence) + ", partition='" + r.partition_id +
               "', total_us=" + std::to_string(r.total_us) + ")";
      });

  py::class_<EngineStats>(*m, "EngineStats")
      .def_readonly("queries", &EngineStats::queries)
      .def_readonly("local", &EngineStats::local)
      .def_readonly("cloud", &EngineStats::cloud)
      .def_readonly("degraded", &EngineStats::degraded)
      .def_readonly("cloud_errors", &EngineStats::cloud_errors)
      .def_readonly("fetches", &EngineStats::fetches)
      .def_readonly("fetch_failures", &EngineStats::fetch_failures)
      .def_readonly("fetched_bytes", &EngineStats::fetched_bytes)
      .def_readonly("uplink_bytes", &EngineStats::uplink_bytes)
      .def_readonly("feature_uploads", &EngineStats::feature_uploads)
      .def_readonly("kept_private", &EngineStats::kept_private)
      .def_readonly("kept_local_only", &EngineStats::kept_local_only)
      .def_readonly("last_fetch_error", &EngineStats::last_fetch_error)
      .def_readonly("cache", &EngineStats::cache)
      .def("__repr__", &FieldsRepr);

  py::class_<InstallPlan>(*m, "InstallPlan")
      .def_static("cached", &InstallPlan::Cached, py::arg("pinned") = true,
                  "Every partition with role 'cached' (the default).")
      .def_static("ids", &InstallPlan::Ids, py::arg("ids"), py::arg("pinned") = true,
                  "These partitions, in order; the first is active.")
      .def_static("staged", &InstallPlan::Staged,
                  "The staged program: the engine answers through its exits.")
      .def_static("none", &InstallPlan::None, "Nothing: a cold device.")
      .def("__repr__", &InstallPlan::ToString);

  py::class_<Engine>(*m, "Engine")
      .def(py::init([](const EngineConfig& c) { return ValueOrRaise(Engine::Create(c)); }),
           py::arg("config"))
      .def_static("from_manifest",
                  [](const EngineConfig& c, Manifest mf, const InstallPlan& plan) {
                    return ValueOrRaise(WithoutGil(
                        [&] { return Engine::FromManifest(c, std::move(mf), plan); }));
                  },
                  py::arg("config"), py::arg("manifest"), py::arg("plan") = InstallPlan::Cached(),
                  "An engine for the manifest's task with `plan` installed from its folder.")
      .def("set_manifest", [](Engine& e, Manifest mf) { RaiseIfError(e.SetManifest(std::move(mf))); },
           py::arg("manifest"))
      .def("install_from_manifest",
           [](Engine& e, const std::string& id, bool pinned) {
             RaiseIfError(WithoutGil([&] { return e.InstallFromManifest(id, pinned); }));
           },
           py::arg("id"), py::arg("pinned") = false)
      .def("install",
           [](Engine& e, std::shared_ptr<CachedModel> model, bool pinned) {
             RaiseIfError(e.Install(std::move(model), pinned));
           },
           py::arg("model"), py::arg("pinned") = false)
      .def("install_staged_from_manifest",
           [](Engine& e, const std::string& id) {
             RaiseIfError(WithoutGil([&] { return e.InstallStagedFromManifest(id); }));
           },
           py::arg("id"))
      .def("install_staged",
           [](Engine& e, std::shared_ptr<StagedModel> model) {
             RaiseIfError(e.InstallStaged(std::move(model)));
           },
           py::arg("model"))
      .def("layer_cache_stats",
           [](const Engine& e) { return ValueOrRaise(e.LayerCacheStatistics()); })
      .def("activate", [](Engine& e, const std::string& id) { RaiseIfError(e.Activate(id)); },
           py::arg("id"))
      .def("infer",
           [](Engine& e, const py::object& x) {
             py::array a = Contiguous(x);
             TensorView view = ViewOf(a);
             return ValueOrRaise(WithoutGil([&] { return e.Infer(view); }));
           },
           py::arg("input"))
      .def("wait_for_fetches",
           [](Engine& e, int timeout_ms) {
             return WithoutGil([&] { return e.WaitForFetches(timeout_ms); });
           },
           py::arg("timeout_ms") = 10000)
      .def_property_readonly("mode", [](const Engine& e) { return LocalModeName(e.Mode()); })
      .def("local_input", [](const Engine& e) { return ValueOrRaise(e.LocalInput()); })
      .def("cached_ids", &Engine::CachedIds)
      .def("active_id", &Engine::ActiveId)
      .def("stats", &Engine::Stats)
      .def_property_readonly("config", &Engine::config);
}

}  // namespace knowcache::python
