#include "knowcache/manifest.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <set>

#include "knowcache/sha256.h"

namespace knowcache {
namespace {

using nlohmann::json;

// Field readers that report the JSON path of what is wrong; nlohmann's own
// accessors would throw, and the core does not.
Status ReadString(const json& obj, const char* key, const std::string& where,
                  std::string* out, bool required = true) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    return required ? InvalidArgument(where + "." + key + " is missing") : Status::Ok();
  }
  if (!it->is_string()) return InvalidArgument(where + "." + key + " must be a string");
  *out = it->get<std::string>();
  return Status::Ok();
}

Status ReadInt(const json& obj, const char* key, const std::string& where, int64_t* out,
               bool required = true) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    return required ? InvalidArgument(where + "." + key + " is missing") : Status::Ok();
  }
  if (!it->is_number_integer()) {
    return InvalidArgument(where + "." + key + " must be an integer");
  }
  *out = it->get<int64_t>();
  return Status::Ok();
}

Status ReadLabels(const json& obj, const char* key, const std::string& where,
                  std::vector<std::string>* out, bool required) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    return required ? InvalidArgument(where + "." + key + " is missing") : Status::Ok();
  }
  if (!it->is_array()) return InvalidArgument(where + "." + key + " must be a list of strings");
  std::set<std::string> seen;
  for (const auto& v : *it) {
    if (!v.is_string() || v.get<std::string>().empty()) {
      return InvalidArgument(where + "." + key + " must hold non-empty strings");
    }
    if (!seen.insert(v.get<std::string>()).second) {
      return InvalidArgument(where + "." + key + " repeats '" + v.get<std::string>() + "'");
    }
    out->push_back(v.get<std::string>());
  }
  return Status::Ok();
}

bool IsSha256Hex(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return std::isdigit(static_cast<unsigned char>(c)) || (c >= 'a' && c <= 'f');
         });
}

Status ParseInput(const json& obj, const std::string& where, InputSpec* spec) {
  if (!obj.is_object()) return InvalidArgument(where + " must be an object");
  std::string dtype = "float32";
  KC_RETURN_IF_ERROR(ReadString(obj, "dtype", where, &dtype));
  auto parsed_dtype = ParseDType(dtype);
  if (!parsed_dtype.ok()) {
    return InvalidArgument(where + ".dtype: " + parsed_dtype.status().message());
  }
  spec->dtype = *parsed_dtype;
  auto shape = obj.find("shape");
  if (shape == obj.end() || !shape->is_array() || shape->empty()) {
    return InvalidArgument(where + ".shape must be a non-empty list of positive integers");
  }
  for (const auto& d : *shape) {
    if (!d.is_number_integer() || d.get<int64_t>() <= 0) {
      return InvalidArgument(where + ".shape must be a non-empty list of positive integers");
    }
    spec->shape.push_back(d.get<int64_t>());
  }
  int64_t v = 0;
  KC_RETURN_IF_ERROR(ReadInt(obj, "sample_rate", where, &v, false));
  spec->sample_rate = static_cast<int>(v);
  auto image = obj.find("image_size");
  if (image != obj.end() && !image->is_null()) {
    if (!image->is_array() || image->size() != 3 ||
        !std::all_of(image->begin(), image->end(),
                     [](const json& x) { return x.is_number_integer() && x.get<int64_t>() > 0; })) {
      return InvalidArgument(where + ".image_size must be [channels, height, width]");
    }
    spec->image_channels = (*image)[0].get<int>();
    spec->image_height = (*image)[1].get<int>();
    spec->image_width = (*image)[2].get<int>();
  }
  auto range = obj.find("value_range");
  if (range != obj.end() && !range->is_null()) {
    auto finite = [](const json& x) { return x.is_number() && std::isfinite(x.get<double>()); };
    if (!range->is_array() || range->size() != 2 || !finite((*range)[0]) ||
        !finite((*range)[1]) || (*range)[0].get<double>() >= (*range)[1].get<double>()) {
      return InvalidArgument(where + ".value_range must be [low, high], two finite numbers "
                             "with low < high");
    }
    spec->value_low = (*range)[0].get<double>();
    spec->value_high = (*range)[1].get<double>();
  }
  return Status::Ok();
}

Status ParseStage(const json& obj, const std::string& where, StageInfo* s) {
  if (!obj.is_object()) return InvalidArgument(where + " must be an object");
  KC_RETURN_IF_ERROR(ReadString(obj, "method", where, &s->method));
  if (s->method.empty()) return InvalidArgument(where + ".method must not be empty");
  KC_RETURN_IF_ERROR(ReadInt(obj, "flops", where, &s->flops));
  if (s->flops < 0) return InvalidArgument(where + ".flops must be >= 0");
  auto us = obj.find("us");
  if (us != obj.end() && !us->is_null()) {
    if (!us->is_number() || us->get<double>() < 0) {
      return InvalidArgument(where + ".us must be a number >= 0");
    }
    s->us = us->get<double>();
  }
  return Status::Ok();
}

Status ParseStaged(const json& obj, const std::string& where, size_t classes, StagedInfo* st) {
  if (!obj.is_object()) return InvalidArgument(where + " must be an object");
  auto stages = obj.find("stages");
  if (stages == obj.end() || !stages->is_array() || stages->empty()) {
    return InvalidArgument(where + ".stages must be a non-empty list");
  }
  for (size_t i = 0; i < stages->size(); ++i) {
    StageInfo s;
    KC_RETURN_IF_ERROR(ParseStage((*stages)[i], where + ".stages[" + std::to_string(i) + "]", &s));
    st->stages.push_back(std::move(s));
  }
  auto head = obj.find("head");
  if (head == obj.end()) return InvalidArgument(where + ".head is missing");
  KC_RETURN_IF_ERROR(ParseStage(*head, where + ".head", &st->head));
  auto exits = obj.find("exits");
  if (exits == obj.end() || !exits->is_array()) {
    return InvalidArgument(where + ".exits must be a list");
  }
  for (size_t i = 0; i < exits->size(); ++i) {
    const std::string at = where + ".exits[" + std::to_string(i) + "]";
    const json& e = (*exits)[i];
    ExitInfo x;
    KC_RETURN_IF_ERROR(ParseStage(e, at, &x.cost));
    int64_t after = -1, dim = 0, ncls = static_cast<int64_t>(classes);
    KC_RETURN_IF_ERROR(ReadInt(e, "after_stage", at, &after));
    if (after < 0 || after + 1 >= static_cast<int64_t>(st->stages.size())) {
      return InvalidArgument(at + ".after_stage must name a stage before the last");
    }
    if (i > 0 && after <= st->exits.back().after_stage) {
      return InvalidArgument(at + ".after_stage must increase from exit to exit");
    }
    x.after_stage = static_cast<int>(after);
    KC_RETURN_IF_ERROR(ReadInt(e, "feature_dim", at, &dim));
    if (dim <= 0) return InvalidArgument(at + ".feature_dim must be positive");
    x.feature_dim = dim;
    KC_RETURN_IF_ERROR(ReadInt(e, "classes", at, &ncls, false));
    if (ncls != static_cast<int64_t>(classes)) {
      return InvalidArgument(at + ".classes must equal the number of labels");
    }
    x.classes = static_cast<int>(ncls);
    auto thr = e.find("thresholds");
    if (thr == e.end() || !thr->is_object()) {
      return InvalidArgument(at + ".thresholds must be an object");
    }
    for (const auto& [kind, value] : thr->items()) {
      if (value.is_null()) continue;  // this gate never hits here
      if (!value.is_number() || !(value.get<double>() >= 0.0 && value.get<double>() <= 1.0)) {
        return InvalidArgument(at + ".thresholds." + kind + " must be null or in [0, 1]");
      }
      x.thresholds[kind] = value.get<double>();
    }
    st->exits.push_back(std::move(x));
  }
  auto total = obj.find("total_flops");
  if (total != obj.end() && total->is_number_integer()) st->total_flops = total->get<int64_t>();
  if (st->total_flops <= 0) {
    for (const auto& s : st->stages) st->total_flops += s.flops;
    st->total_flops += st->head.flops;
  }
  return Status::Ok();
}

Status ParsePartition(const json& obj, const std::string& where, PartitionInfo* p) {
  if (!obj.is_object()) return InvalidArgument(where + " must be an object");
  KC_RETURN_IF_ERROR(ReadString(obj, "id", where, &p->id));
  if (p->id.empty() || p->id.find_first_of("/\\ ") != std::string::npos) {
    return InvalidArgument(where + ".id must be non-empty without '/', '\\' or spaces");
  }
  const std::string at = where + "(" + p->id + ")";
  int64_t version = 1;
  KC_RETURN_IF_ERROR(ReadInt(obj, "version", at, &version, false));
  p->version = static_cast<int>(version);
  std::string role;
  KC_RETURN_IF_ERROR(ReadString(obj, "role", at, &role));
  auto parsed_role = ParsePartitionRole(role);
  if (!parsed_role.ok()) return InvalidArgument(at + "." + parsed_role.status().message());
  p->role = *parsed_role;
  KC_RETURN_IF_ERROR(ReadString(obj, "file", at, &p->file));
  KC_RETURN_IF_ERROR(ReadLabels(obj, "labels", at, &p->labels, true));
  if (p->labels.size() < 2) return InvalidArgument(at + ".labels needs at least 2 labels");
  std::string other;
  KC_RETURN_IF_ERROR(ReadString(obj, "other_label", at, &other, false));
  if (!other.empty()) {
    auto it = std::find(p->labels.begin(), p->labels.end(), other);
    if (it == p->labels.end()) {
      return InvalidArgument(at + ".other_label '" + other + "' is not in its labels");
    }
    p->other_index = static_cast<int>(it - p->labels.begin());
  }
  auto input = obj.find("input");
  if (input == obj.end()) return InvalidArgument(at + ".input is missing");
  KC_RETURN_IF_ERROR(ParseInput(*input, at + ".input", &p->input));
  auto thr = obj.find("threshold");
  if (thr == obj.end() || !thr->is_number()) {
    return InvalidArgument(at + ".threshold must be a number in [0, 1]");
  }
  double t = thr->get<double>();
  if (!(t >= 0.0 && t <= 1.0)) return InvalidArgument(at + ".threshold must be in [0, 1]");
  p->threshold = static_cast<float>(t);
  KC_RETURN_IF_ERROR(ReadInt(obj, "bytes", at, &p->bytes));
  if (p->bytes <= 0) return InvalidArgument(at + ".bytes must be positive");
  KC_RETURN_IF_ERROR(ReadString(obj, "sha256", at, &p->sha256));
  std::transform(p->sha256.begin(), p->sha256.end(), p->sha256.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  if (!IsSha256Hex(p->sha256)) return InvalidArgument(at + ".sha256 must be 64 hex digits");
  if (p->role == PartitionRole::kStaged) {
    auto staged = obj.find("staged");
    if (staged == obj.end()) return InvalidArgument(at + ".staged is missing (role staged)");
    KC_RETURN_IF_ERROR(ParseStaged(*staged, at + ".staged", p->labels.size(), &p->staged));
  }
  return Status::Ok();
}

}  // namespace

const char* PartitionRoleName(PartitionRole role) {
  switch (role) {
    case PartitionRole::kFull: return "full";
    case PartitionRole::kCached: return "cached";
    case PartitionRole::kPartition: return "partition";
    case PartitionRole::kGeneric: return "generic";
    case PartitionRole::kStaged: return "staged";
  }
  return "unknown";
}

StatusOr<PartitionRole> ParsePartitionRole(const std::string& name) {
  for (PartitionRole r : {PartitionRole::kFull, PartitionRole::kCached, PartitionRole::kPartition,
                          PartitionRole::kGeneric, PartitionRole::kStaged}) {
    if (name == PartitionRoleName(r)) return r;
  }
  return InvalidArgument("role is '" + name +
                         "'; expected full, cached, partition, generic or staged");
}

StatusOr<PartitionInfo> PartitionInfo::Parse(const std::string& json_text) {
  json obj = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (obj.is_discarded()) return InvalidArgument("partition entry is not valid JSON");
  PartitionInfo p;
  KC_RETURN_IF_ERROR(ParsePartition(obj, "partition", &p));
  return p;
}

StatusOr<Manifest> Manifest::Parse(const std::string& json_text) {
  json root = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return InvalidArgument("manifest is not valid JSON");
  if (!root.is_object()) return InvalidArgument("manifest must be a JSON object");
  Manifest m;
  int64_t schema = 0;
  KC_RETURN_IF_ERROR(ReadInt(root, "schema_version", "manifest", &schema));
  if (schema != kManifestSchemaVersion) {
    return InvalidArgument("manifest schema_version " + std::to_string(schema) +
                           " is not supported; this runtime reads version " +
                           std::to_string(kManifestSchemaVersion) +
                           " (re-export with a matching knowcache)");
  }
  m.schema_version = static_cast<int>(schema);
  KC_RETURN_IF_ERROR(ReadString(root, "task", "manifest", &m.task));
  int64_t version = 1;
  KC_RETURN_IF_ERROR(ReadInt(root, "version", "manifest", &version, false));
  m.version = static_cast<int>(version);
  KC_RETURN_IF_ERROR(ReadLabels(root, "labels", "manifest", &m.labels, false));
  KC_RETURN_IF_ERROR(ReadLabels(root, "private_labels", "manifest", &m.private_labels, false));
  for (const auto& label : m.private_labels) {
    if (m.LabelIndex(label) < 0) {
      return InvalidArgument("manifest.private_labels names '" + label +
                             "', which is not in manifest.labels");
    }
  }
  auto parts = root.find("partitions");
  if (parts == root.end() || !parts->is_array()) {
    return InvalidArgument("manifest.partitions must be a list");
  }
  std::set<std::string> ids;
  for (size_t i = 0; i < parts->size(); ++i) {
    PartitionInfo p;
    KC_RETURN_IF_ERROR(
        ParsePartition((*parts)[i], "manifest.partitions[" + std::to_string(i) + "]", &p));
    if (!ids.insert(p.id).second) {
      return InvalidArgument("manifest repeats partition id '" + p.id + "'");
    }
    m.partitions.push_back(std::move(p));
  }
  return m;
}

StatusOr<Manifest> Manifest::Load(const std::string& path) {
  KC_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadFileBytes(path));
  auto parsed = Parse(std::string(bytes.begin(), bytes.end()));
  if (!parsed.ok()) {
    return Status(parsed.status().code(), path + ": " + parsed.status().message());
  }
  Manifest m = std::move(parsed).value();
  auto slash = path.find_last_of('/');
  m.directory = slash == std::string::npos ? "." : path.substr(0, slash);
  return m;
}

const PartitionInfo* Manifest::Find(const std::string& id) const {
  for (const auto& p : partitions) {
    if (p.id == id) return &p;
  }
  return nullptr;
}

std::vector<std::string> Manifest::IdsWithRole(PartitionRole role) const {
  std::vector<std::string> ids;
  for (const auto& p : partitions) {
    if (p.role == role) ids.push_back(p.id);
  }
  return ids;
}

bool Manifest::IsPrivate(const std::string& label) const {
  return std::find(private_labels.begin(), private_labels.end(), label) != private_labels.end();
}

int Manifest::LabelIndex(const std::string& label) const {
  auto it = std::find(labels.begin(), labels.end(), label);
  return it == labels.end() ? -1 : static_cast<int>(it - labels.begin());
}

std::string Manifest::PathOf(const PartitionInfo& info) const {
  if (!info.file.empty() && info.file[0] == '/') return info.file;
  return (directory.empty() ? std::string(".") : directory) + "/" + info.file;
}

Status PartitionInfo::CheckBytes(const std::vector<uint8_t>& data) const {
  const std::string who = "partition '" + id + "'";
  if (bytes > 0 && static_cast<int64_t>(data.size()) != bytes) {
    return Corrupt(who + " is " + std::to_string(data.size()) + " bytes but the manifest says " +
                   std::to_string(bytes) + " (truncated or replaced file)");
  }
  if (!sha256.empty()) {
    std::string actual = Sha256Hex(data.data(), data.size());
    if (actual != sha256) {
      return Corrupt(who + " fails its sha256 check: manifest " + sha256 + ", bytes " + actual);
    }
  }
  return Status::Ok();
}

Status InputSpec::Check(const TensorView& view) const {
  KC_RETURN_IF_ERROR(view.Validate());
  if (view.dtype != dtype) {
    return InvalidArgument(std::string("input dtype is ") + DTypeName(view.dtype) +
                           " but the model expects " + DTypeName(dtype));
  }
  if (view.shape != shape) {
    return InvalidArgument("input shape is " + ShapeToString(view.shape) +
                           " but the model expects " + ShapeToString(shape));
  }
  if (has_value_range() && dtype == DType::kFloat32) {
    // A little slack for values computed in float (x / 255 * (high - low) + low).
    const double slack = 1e-6 * (value_high - value_low);
    const auto* x = static_cast<const float*>(view.data);
    const int64_t n = NumElements(view.shape);
    for (int64_t i = 0; i < n; ++i) {
      if (!(x[i] >= value_low - slack && x[i] <= value_high + slack)) {
        char buf[200];
        std::snprintf(buf, sizeof(buf),
                      "input element %lld is %g, outside the model's value_range [%g, %g]; "
                      "scale the input to it (uint8 pixels: low + p / 255 * (high - low))",
                      static_cast<long long>(i), x[i], value_low, value_high);
        return InvalidArgument(buf);
      }
    }
  }
  return Status::Ok();
}

}  // namespace knowcache
