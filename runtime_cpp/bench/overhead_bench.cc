// Per-inference overhead of the knowcache runtime over a bare ExecuTorch
// Module::forward on the same program.
//
//   knowcache_overhead_bench MODEL.pte [--iters N] [--rounds R] [--threads T]
//
// Three ways to run one input, interleaved round by round so machine noise
// hits all of them alike: (1) bare Module::execute with a prebuilt input
// tensor, (2) Partition::Run (validation, input wrapping, lock, output copy),
// (3) Engine::Infer on a local-accept path (adds the gate and bookkeeping).
// Prints the median per-call time of each and the overhead in percent, then a
// JSON line for tools.
#include <executorch/extension/data_loader/shared_ptr_data_loader.h>
#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "knowcache/engine.h"
#include "knowcache/partition.h"
#include "knowcache/sha256.h"
#include "knowcache/threads.h"

namespace {

using Clock = std::chrono::steady_clock;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

int Fail(const std::string& what) {
  std::fprintf(stderr, "knowcache_overhead_bench: %s\n", what.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace knowcache;
  if (argc < 2 || !std::strcmp(argv[1], "--help")) {
    std::fprintf(stderr, "usage: %s MODEL.pte [--iters N] [--rounds R] [--threads T]\n", argv[0]);
    return argc < 2 ? 2 : 0;
  }
  std::string path = argv[1];
  int iters = 200, rounds = 15, threads = 1;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    int v = std::atoi(argv[i + 1]);
    if (v < 1) return Fail("flag " + flag + " needs a positive integer");
    if (flag == "--iters") iters = v;
    else if (flag == "--rounds") rounds = v;
    else if (flag == "--threads") threads = v;
    else return Fail("unknown flag " + flag);
  }
  if (Status s = SetComputeThreads(threads); !s.ok()) return Fail(s.ToString());

  auto raw = ReadFileBytes(path);
  if (!raw.ok()) return Fail(raw.status().ToString());
  auto bytes = std::make_shared<const std::vector<uint8_t>>(std::move(raw).value());

  auto partition = Partition::FromBytes(bytes, PartitionInfo{});
  if (!partition.ok()) return Fail(partition.status().ToString());
  std::shared_ptr<Partition> part = *partition;
  if (part->input_dtype() != DType::kFloat32) return Fail("the benchmark feeds float32 inputs");

  // (1) A bare Module over the same bytes, input tensor built once.
  std::shared_ptr<void> data(bytes, const_cast<uint8_t*>(bytes->data()));
  executorch::extension::Module bare(
      std::make_unique<executorch::extension::SharedPtrDataLoader>(data, bytes->size()));
  if (bare.load_method("forward") != executorch::runtime::Error::Ok) {
    return Fail("bare Module could not load 'forward'");
  }
  std::vector<float> input(static_cast<size_t>(NumElements(part->input_shape())));
  std::mt19937 rng(0);
  std::normal_distribution<float> normal;
  for (float& v : input) v = normal(rng);
  std::vector<executorch::aten::SizesType> sizes(part->input_shape().begin(),
                                                 part->input_shape().end());
  auto bare_input = executorch::extension::from_blob(input.data(), sizes);

  // (3) An engine that accepts every local answer.
  EngineConfig cfg;
  cfg.task = "bench";
  cfg.cache.num_slots = 1;
  cfg.threshold_override = 1.0f;
  auto engine = Engine::Create(cfg);
  if (!engine.ok()) return Fail(engine.status().ToString());
  if (Status s = (*engine)->Install(part); !s.ok()) return Fail(s.ToString());

  TensorView view{DType::kFloat32, part->input_shape(), input.data(), input.size() * sizeof(float)};
  float sink = 0;
  auto run_bare = [&] {
    auto out = bare.execute("forward", *bare_input);
    sink += out.ok() ? (*out)[0].toTensor().const_data_ptr<float>()[0] : 0.f;
  };
  auto run_partition = [&] {
    auto out = part->Run(view);
    sink += out.ok() ? (*out)[0] : 0.f;
  };
  auto run_engine = [&] {
    auto out = (*engine)->Infer(view);
    sink += out.ok() ? out->confidence : 0.f;
  };
  auto time_us = [&](auto&& fn) {
    auto t0 = Clock::now();
    for (int i = 0; i < iters; ++i) fn();
    return std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / iters;
  };
  const std::array<std::function<void()>, 3> variants = {run_bare, run_partition, run_engine};
  for (int i = 0; i < std::max(10, iters / 10); ++i) {
    for (const auto& run : variants) run();
  }

  std::array<std::vector<double>, 3> times;
  for (int r = 0; r < rounds; ++r) {
    // Rotate the order each round so no variant always runs on a warm cache.
    for (int k = 0; k < 3; ++k) {
      int v = (r + k) % 3;
      times[v].push_back(time_us(variants[v]));
    }
  }
  double b = Median(times[0]), p = Median(times[1]), e = Median(times[2]);
  std::printf("model %s (%zu bytes, input %s), %d threads, %d rounds x %d iters\n", path.c_str(),
              bytes->size(), ShapeToString(part->input_shape()).c_str(), threads, rounds, iters);
  std::printf("  bare Module::execute   %9.2f us/call\n", b);
  std::printf("  Partition::Run         %9.2f us/call  overhead %+6.2f%% (%+.2f us)\n", p,
              100.0 * (p - b) / b, p - b);
  std::printf("  Engine::Infer (local)  %9.2f us/call  overhead %+6.2f%% (%+.2f us)\n", e,
              100.0 * (e - b) / b, e - b);
  std::printf("{\"bare_us\": %.3f, \"partition_us\": %.3f, \"engine_us\": %.3f, "
              "\"partition_overhead_pct\": %.3f, \"engine_overhead_pct\": %.3f, \"threads\": %d, "
              "\"sink\": %.1f}\n",
              b, p, e, 100.0 * (p - b) / b, 100.0 * (e - b) / b, threads, sink > 0 ? 1.0 : 0.0);
  return 0;
}
