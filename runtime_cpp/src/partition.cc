#include "knowcache/partition.h"

#include <executorch/extension/data_loader/shared_ptr_data_loader.h>
#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>

#include "knowcache/log.h"
#include "knowcache/sha256.h"

namespace knowcache {

namespace et = ::executorch::runtime;
using ::executorch::aten::ScalarType;
using ::executorch::extension::Module;
using ::executorch::extension::SharedPtrDataLoader;

namespace {

StatusOr<DType> FromScalarType(ScalarType t) {
  switch (t) {
    case ScalarType::Float: return DType::kFloat32;
    case ScalarType::Byte: return DType::kUInt8;
    case ScalarType::Char: return DType::kInt8;
    case ScalarType::Int: return DType::kInt32;
    case ScalarType::Long: return DType::kInt64;
    default:
      return InvalidArgument("program input has unsupported scalar type " +
                             std::to_string(static_cast<int>(t)));
  }
}

ScalarType ToScalarType(DType d) {
  switch (d) {
    case DType::kFloat32: return ScalarType::Float;
    case DType::kUInt8: return ScalarType::Byte;
    case DType::kInt8: return ScalarType::Char;
    case DType::kInt32: return ScalarType::Int;
    case DType::kInt64: return ScalarType::Long;
  }
  return ScalarType::Float;
}

std::string EtError(et::Error e) {
  return std::string(et::to_string(e)) + " (0x" +
         [](int v) { char b[8]; std::snprintf(b, sizeof(b), "%x", v); return std::string(b); }(
             static_cast<int>(e)) + ")";
}

std::string StemOf(const std::string& path) {
  auto slash = path.find_last_of('/');
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  auto dot = base.find_last_of('.');
  return dot == std::string::npos ? base : base.substr(0, dot);
}

}  // namespace

class PartitionImpl {
 public:
  PartitionInfo info;
  std::string method;
  std::shared_ptr<const std::vector<uint8_t>> bytes;
  std::unique_ptr<Module> module;
  DType input_dtype = DType::kFloat32;
  std::vector<int64_t> input_shape;
  std::vector<::executorch::aten::SizesType> input_sizes;
  InputSpec program_input;
  int64_t num_outputs = 0;
  int64_t planned_bytes = 0;
  std::mutex mu;
};

Partition::Partition(std::unique_ptr<PartitionImpl> impl) : impl_(std::move(impl)) {}
Partition::~Partition() = default;

StatusOr<std::shared_ptr<Partition>> Partition::FromFile(const std::string& path,
                                                         PartitionInfo info,
                                                         const PartitionLoadOptions& options) {
  KC_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadFileBytes(path));
  if (info.id.empty()) info.id = StemOf(path);
  if (info.file.empty()) info.file = path;
  auto shared = std::make_shared<const std::vector<uint8_t>>(std::move(bytes));
  auto loaded = FromBytes(std::move(shared), std::move(info), options);
  if (!loaded.ok()) {
    return Status(loaded.status().code(), path + ": " + loaded.status().message());
  }
  return loaded;
}

StatusOr<std::shared_ptr<Partition>> Partition::FromBytes(
    std::shared_ptr<const std::vector<uint8_t>> bytes, PartitionInfo info,
    const PartitionLoadOptions& options) {
  if (!bytes || bytes->empty()) return Corrupt("partition '" + info.id + "' has no bytes");
  if (info.id.empty()) info.id = "partition";
  const std::string who = "partition '" + info.id + "'";
  if (options.verify) KC_RETURN_IF_ERROR(info.CheckBytes(*bytes));

  auto impl = std::make_unique<PartitionImpl>();
  impl->method = options.method;
  impl->bytes = bytes;
  // Aliasing constructor: the loader shares ownership of the vector and sees
  // its data. ExecuTorch only reads program bytes.
  std::shared_ptr<void> data(bytes, const_cast<uint8_t*>(bytes->data()));
  impl->module = std::make_unique<Module>(
      std::make_unique<SharedPtrDataLoader>(std::move(data), bytes->size()));
  et::Error err = impl->module->load(et::Program::Verification::InternalConsistency);
  if (err != et::Error::Ok) {
    return Corrupt(who + " is not a valid ExecuTorch program: " + EtError(err));
  }
  auto meta = impl->module->method_meta(options.method);
  if (!meta.ok()) {
    return Corrupt(who + " has no method '" + options.method + "': " + EtError(meta.error()));
  }
  if (meta->num_inputs() < 1 || meta->num_outputs() < 1) {
    return Corrupt(who + " method '" + options.method + "' must take and return a tensor");
  }
  auto in = meta->input_tensor_meta(0);
  auto out = meta->output_tensor_meta(0);
  if (!in.ok() || !out.ok()) return Corrupt(who + " input or output 0 is not a tensor");
  KC_ASSIGN_OR_RETURN(impl->input_dtype, FromScalarType(in->scalar_type()));
  if (out->scalar_type() != ScalarType::Float) {
    return Corrupt(who + " must output float32 logits");
  }
  for (auto s : in->sizes()) {
    impl->input_shape.push_back(s);
    impl->input_sizes.push_back(s);
  }
  impl->num_outputs = 1;
  for (auto s : out->sizes()) impl->num_outputs *= s;
  for (size_t i = 0; i < meta->num_memory_planned_buffers(); ++i) {
    auto size = meta->memory_planned_buffer_size(i);
    if (size.ok()) impl->planned_bytes += *size;
  }

  // The manifest's input spec, when given, must agree with the program.
  if (info.input.shape.empty()) {
    info.input.dtype = impl->input_dtype;
    info.input.shape = impl->input_shape;
  } else if (info.input.shape != impl->input_shape || info.input.dtype != impl->input_dtype) {
    return InvalidArgument(who + ": manifest input " + DTypeName(info.input.dtype) + "[" +
                           ShapeToString(info.input.shape) + "] does not match the program's " +
                           DTypeName(impl->input_dtype) + "[" +
                           ShapeToString(impl->input_shape) + "]");
  }
  if (!info.labels.empty() && static_cast<int64_t>(info.labels.size()) != impl->num_outputs) {
    return InvalidArgument(who + " has " + std::to_string(info.labels.size()) +
                           " labels but the program outputs " +
                           std::to_string(impl->num_outputs) + " logits");
  }
  if (info.bytes <= 0) info.bytes = static_cast<int64_t>(bytes->size());
  impl->program_input = info.input;
  impl->info = std::move(info);

  // Load up front so the first inference pays no load cost.
  err = impl->module->load_method(options.method);
  if (err != et::Error::Ok) {
    return Corrupt(who + " method '" + options.method + "' failed to load: " + EtError(err));
  }
  KC_LOG(kInfo, "loaded %s: %zu bytes, input %s[%s], %lld outputs", who.c_str(),
         bytes->size(), DTypeName(impl->input_dtype),
         ShapeToString(impl->input_shape).c_str(), static_cast<long long>(impl->num_outputs));
  return std::shared_ptr<Partition>(new Partition(std::move(impl)));
}

const PartitionInfo& Partition::info() const { return impl_->info; }

int64_t Partition::resident_bytes() const {
  return static_cast<int64_t>(impl_->bytes->size()) + impl_->planned_bytes;
}

DType Partition::input_dtype() const { return impl_->input_dtype; }
const std::vector<int64_t>& Partition::input_shape() const { return impl_->input_shape; }
int64_t Partition::num_outputs() const { return impl_->num_outputs; }

StatusOr<std::vector<float>> Partition::Run(const TensorView& input) {
  Status valid = impl_->program_input.Check(input);
  if (!valid.ok()) {
    return InvalidArgument("partition '" + impl_->info.id + "': " + valid.message());
  }
  auto tensor = ::executorch::extension::from_blob(
      const_cast<void*>(input.data), impl_->input_sizes, ToScalarType(input.dtype));
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto outputs = impl_->module->execute(impl_->method, *tensor);
  if (!outputs.ok()) {
    return Internal("partition '" + impl_->info.id + "' failed to run: " +
                    EtError(outputs.error()));
  }
  if (outputs->empty() || !(*outputs)[0].isTensor()) {
    return Internal("partition '" + impl_->info.id + "' returned no tensor");
  }
  const auto& logits = (*outputs)[0].toTensor();
  const float* p = logits.const_data_ptr<float>();
  // Copied under the lock: the next call reuses the method's output memory.
  return std::vector<float>(p, p + logits.numel());
}

}  // namespace knowcache
