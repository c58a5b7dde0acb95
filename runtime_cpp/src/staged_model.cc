#include "knowcache/staged_model.h"

#include <initializer_list>
#include <mutex>

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

TensorView Activation::view() const {
  TensorView v;
  v.dtype = DType::kFloat32;
  v.shape = shape;
  v.data = data.data();
  v.nbytes = data.size() * sizeof(float);
  return v;
}

class StagedModelImpl {
 public:
  PartitionInfo info;
  std::shared_ptr<const std::vector<uint8_t>> bytes;
  std::unique_ptr<Module> module;
  int64_t planned_bytes = 0;
  std::vector<bool> reads_input;  // per stage: its method takes the model input too
  std::mutex mu;

  std::string Who() const { return "staged program '" + info.id + "'"; }

  // Runs `method` on float32 tensors; outputs copied out under the lock.
  StatusOr<std::vector<Activation>> Execute(const std::string& method,
                                            std::initializer_list<const TensorView*> ins) {
    std::vector<::executorch::extension::TensorPtr> tensors;
    std::vector<::executorch::runtime::EValue> args;
    for (const TensorView* in : ins) {
      std::vector<::executorch::aten::SizesType> sizes(in->shape.begin(), in->shape.end());
      tensors.push_back(::executorch::extension::from_blob(const_cast<void*>(in->data), sizes,
                                                           ScalarType::Float));
      args.emplace_back(*tensors.back());
    }
    std::lock_guard<std::mutex> lock(mu);
    auto outputs = module->execute(method, args);
    if (!outputs.ok()) {
      return Internal(Who() + " method '" + method + "' failed: error " +
                      std::to_string(static_cast<int>(outputs.error())));
    }
    std::vector<Activation> result;
    for (const auto& value : *outputs) {
      if (!value.isTensor()) return Internal(Who() + " method '" + method + "' returned a non-tensor");
      const auto& t = value.toTensor();
      if (t.scalar_type() != ScalarType::Float) {
        return Internal(Who() + " method '" + method + "' returned a non-float32 tensor");
      }
      Activation a;
      for (auto s : t.sizes()) a.shape.push_back(s);
      const float* p = t.const_data_ptr<float>();
      a.data.assign(p, p + t.numel());
      result.push_back(std::move(a));
    }
    return result;
  }
};

namespace {

// The ExecuTorch implementation behind StagedModel::FromBytes.
class ProgramStagedModel final : public StagedModel {
 public:
  explicit ProgramStagedModel(std::unique_ptr<StagedModelImpl> impl) : impl_(std::move(impl)) {}

  const PartitionInfo& info() const override { return impl_->info; }
  int64_t resident_bytes() const override {
    return static_cast<int64_t>(impl_->bytes->size()) + impl_->planned_bytes;
  }
  StatusOr<Activation> RunFirstStage(const TensorView& input) override;
  StatusOr<Activation> RunStage(int stage, const Activation& in,
                                const TensorView& input) override;
  bool StageReadsInput(int stage) const override {
    return stage >= 0 && stage < num_stages() && impl_->reads_input[stage];
  }
  StatusOr<ExitOutput> RunExit(int exit, const Activation& in) override;
  StatusOr<std::vector<float>> RunHead(const Activation& in) override;

 private:
  std::unique_ptr<StagedModelImpl> impl_;
};

}  // namespace

StatusOr<std::shared_ptr<StagedModel>> StagedModel::FromFile(const std::string& path,
                                                             PartitionInfo info, bool verify) {
  KC_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadFileBytes(path));
  auto loaded = FromBytes(std::make_shared<const std::vector<uint8_t>>(std::move(bytes)),
                          std::move(info), verify);
  if (!loaded.ok()) return Status(loaded.status().code(), path + ": " + loaded.status().message());
  return loaded;
}

StatusOr<std::shared_ptr<StagedModel>> StagedModel::FromBytes(
    std::shared_ptr<const std::vector<uint8_t>> bytes, PartitionInfo info, bool verify) {
  auto impl = std::make_unique<StagedModelImpl>();
  impl->info = std::move(info);
  const std::string who = impl->Who();
  if (impl->info.role != PartitionRole::kStaged || impl->info.staged.empty()) {
    return InvalidArgument(who + " needs a manifest entry with role 'staged' and its stages");
  }
  if (!bytes || bytes->empty()) return Corrupt(who + " has no bytes");
  if (verify) KC_RETURN_IF_ERROR(impl->info.CheckBytes(*bytes));
  impl->bytes = bytes;
  std::shared_ptr<void> data(bytes, const_cast<uint8_t*>(bytes->data()));
  impl->module = std::make_unique<Module>(
      std::make_unique<SharedPtrDataLoader>(std::move(data), bytes->size()));
  if (impl->module->load(et::Program::Verification::InternalConsistency) != et::Error::Ok) {
    return Corrupt(who + " is not a valid ExecuTorch program");
  }
  const StagedInfo& st = impl->info.staged;
  std::vector<std::string> methods;
  for (const auto& s : st.stages) methods.push_back(s.method);
  for (const auto& e : st.exits) methods.push_back(e.cost.method);
  methods.push_back(st.head.method);
  for (const auto& m : methods) {
    auto meta = impl->module->method_meta(m);
    if (!meta.ok()) return Corrupt(who + " has no method '" + m + "' that its manifest lists");
    for (size_t i = 0; i < meta->num_memory_planned_buffers(); ++i) {
      auto size = meta->memory_planned_buffer_size(i);
      if (size.ok()) impl->planned_bytes += *size;
    }
    if (impl->module->load_method(m) != et::Error::Ok) {
      return Corrupt(who + " method '" + m + "' failed to load");
    }
  }
  auto first = impl->module->method_meta(st.stages[0].method);
  auto in = first->input_tensor_meta(0);
  if (!in.ok() || in->scalar_type() != ScalarType::Float || first->num_inputs() != 1) {
    return Corrupt(who + " stage 0 must take one float32 tensor (the model input)");
  }
  std::vector<int64_t> shape(in->sizes().begin(), in->sizes().end());
  impl->reads_input.push_back(false);
  for (size_t i = 1; i < st.stages.size(); ++i) {
    auto meta = impl->module->method_meta(st.stages[i].method);
    const size_t n = meta->num_inputs();
    if (n != 1 && n != 2) {
      return Corrupt(who + " method '" + st.stages[i].method + "' takes " + std::to_string(n) +
                     " inputs; a stage takes the previous stage's output and optionally the "
                     "model input");
    }
    if (n == 2) {
      auto second = meta->input_tensor_meta(1);
      if (!second.ok() || second->scalar_type() != ScalarType::Float ||
          std::vector<int64_t>(second->sizes().begin(), second->sizes().end()) != shape) {
        return Corrupt(who + " method '" + st.stages[i].method +
                       "' must take the model input [" + ShapeToString(shape) +
                       "] (float32) as its second argument");
      }
    }
    impl->reads_input.push_back(n == 2);
  }
  if (impl->info.input.shape.empty()) {
    impl->info.input.shape = shape;
  } else if (impl->info.input.shape != shape) {
    return InvalidArgument(who + ": manifest input [" + ShapeToString(impl->info.input.shape) +
                           "] does not match the program's [" + ShapeToString(shape) + "]");
  }
  KC_LOG(kInfo, "loaded %s: %zu stages, %zu exits, %zu bytes", who.c_str(), st.stages.size(),
         st.exits.size(), bytes->size());
  return std::shared_ptr<StagedModel>(std::make_shared<ProgramStagedModel>(std::move(impl)));
}

StatusOr<Activation> ProgramStagedModel::RunFirstStage(const TensorView& input) {
  Status valid = impl_->info.input.Check(input);
  if (!valid.ok()) return InvalidArgument(impl_->Who() + ": " + valid.message());
  KC_ASSIGN_OR_RETURN(auto out, impl_->Execute(impl_->info.staged.stages[0].method, {&input}));
  return std::move(out[0]);
}

StatusOr<Activation> ProgramStagedModel::RunStage(int stage, const Activation& in,
                                                  const TensorView& input) {
  if (stage == 0) return RunFirstStage(input);
  if (stage < 0 || stage >= num_stages()) {
    return InvalidArgument(impl_->Who() + " has no stage " + std::to_string(stage));
  }
  const std::string& method = impl_->info.staged.stages[stage].method;
  const TensorView act = in.view();
  if (!impl_->reads_input[stage]) {
    KC_ASSIGN_OR_RETURN(auto out, impl_->Execute(method, {&act}));
    return std::move(out[0]);
  }
  Status valid = impl_->info.input.Check(input);
  if (!valid.ok()) {
    return InvalidArgument(impl_->Who() + " stage " + std::to_string(stage) +
                           " reads the model input: " + valid.message());
  }
  KC_ASSIGN_OR_RETURN(auto out, impl_->Execute(method, {&act, &input}));
  return std::move(out[0]);
}

StatusOr<ExitOutput> ProgramStagedModel::RunExit(int exit, const Activation& in) {
  if (exit < 0 || exit >= num_exits()) {
    return InvalidArgument(impl_->Who() + " has no exit " + std::to_string(exit));
  }
  const TensorView act = in.view();
  KC_ASSIGN_OR_RETURN(auto out,
                      impl_->Execute(impl_->info.staged.exits[exit].cost.method, {&act}));
  if (out.size() != 3 || out[1].data.size() != 1) {
    return Corrupt(impl_->Who() + " exit " + std::to_string(exit) +
                   " must return (logits, selector logit, feature)");
  }
  ExitOutput e;
  e.logits = std::move(out[0].data);
  e.selector = out[1].data[0];
  e.feature = std::move(out[2].data);
  return e;
}

StatusOr<std::vector<float>> ProgramStagedModel::RunHead(const Activation& in) {
  const TensorView act = in.view();
  KC_ASSIGN_OR_RETURN(auto out, impl_->Execute(impl_->info.staged.head.method, {&act}));
  return std::move(out[0].data);
}

}  // namespace knowcache
