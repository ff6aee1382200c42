// Speed measurement (never in tests): prompt processing (ppN) and token
// generation (tgN) in the manner of llama-bench, with the machine's memory
// bandwidth measured interleaved, repetition by repetition, so that decode
// time can be stated as a multiple of its bandwidth limit
// (weight bytes read per token / bandwidth). Figures are medians.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "adapters/exec.h"
#include "model/adapter_exec.h"
#include "model/weights.h"
#include "util/json.h"
#include "util/memory.h"
#include "util/threads.h"

namespace flora {

// Most untimed steps before a timed test (each starts from an empty cache).
inline constexpr int64_t kWarmupSteps = 12;

struct BenchOptions {
  int64_t n_prompt = 512;  // 0: no pp test
  int64_t n_gen = 128;     // 0: no tg test
  int repetitions = 5;
  size_t bandwidth_bytes = size_t{1} << 28;  // read-loop buffer: 256 MiB, 8x the largest L3 here
  uint64_t seed = 1;
};

struct BenchResult {
  std::string test;  // "pp512", "tg128"
  int64_t n_tokens = 0;
  double ms_per_token = 0;  // median over repetitions
  double tokens_per_s = 0;
  double bandwidth_gbs = 0;  // median read bandwidth measured beside this test
  // Time per token if the weights were read once per forward call at the
  // measured bandwidth: (decode weight bytes / bandwidth) / tokens per call.
  double bandwidth_limit_ms = 0;
  double roofline_ratio = 0;  // median over repetitions of ms_per_token / bandwidth_limit_ms
  double sync_points_per_token = 0;
  std::vector<double> samples_ms;  // ms per token of each repetition
  Json to_json() const;
};

// Reads `bytes` of memory with the pool's threads (ops::sum, which prefetches
// like the matrix kernels) and returns GB/s (1e9 B/s).
class BandwidthProbe {
 public:
  BandwidthProbe(ThreadPool& pool, size_t bytes);
  double measure();
  // Median of passes - 1 passes after one untimed pass.
  double measure_warm(int passes = 4);

 private:
  ThreadPool& pool_;
  AnonymousBuffer buffer_;  // huge pages, like the weights (LlamaModel::load)
  int64_t n_ = 0;           // floats in buffer_
};

using BenchProgress = std::function<void(const std::string& what)>;

// One configuration of `flora bench --variants`: the base model, an adapter
// (exec), or replacement weights (a merged LoRA).
struct BenchVariant {
  std::string name;
  const AdapterExec* exec = nullptr;
  const std::vector<LayerWeights>* layers = nullptr;
  int64_t rank = 0, adapter_params = 0;
  size_t adapter_bytes = 0;
};

// A random adapter of `variant` at `rank` (ffa stores 2x): every matrix
// non-zero (AdapterInit::Random), so that its work is real, and lora_alpha =
// 2 x the stored rank unless alpha > 0. Seeds differ for different adapters.
std::unique_ptr<AttachedAdapter> make_random_adapter(const LlamaModel& model, const std::string& variant, int64_t rank,
                                                     double alpha, DType dtype, uint64_t seed);
// The bench's view of an attached adapter; adapter_bytes counts its
// parameters in `dtype`, the bytes a forward call reads of them (0 for a
// merged LoRA, whose forward reads the merged copy of the base instead).
BenchVariant bench_variant(const AttachedAdapter& attached, DType dtype);

// Runs untimed steps until two in a row take about the same time (at most
// kWarmupSteps): memory another test used last (the probe's buffer, a merged
// copy of the weights) reads slowly at first on these machines (see run_bench).
void warm_until_steady(const std::function<void()>& step);

struct VariantResult {
  std::string variant;
  int64_t rank = 0, adapter_params = 0;
  size_t adapter_bytes = 0;
  double ttft_ms = 0;       // median: prompt of n_prompt tokens in, first token chosen
  double tpot_ms = 0;       // median over repetitions of the median decode step
  double overhead_pct = 0;  // median over repetitions of (tpot / base tpot of that repetition - 1) * 100
  double ttft_overhead_pct = 0;
  double sync_points_per_token = 0;
  std::vector<double> tpot_samples_ms;
  // Memory bandwidth of the run (median of a read loop before the first and after every
  // repetition), and TPOT against the time to read the variant's weights once at it.
  double bandwidth_gbs = 0, bandwidth_limit_ms = 0, roofline_ratio = 0;
  Json to_json() const;
};

// Variants run one after another inside every repetition (the starting one
// rotating), so each ratio to the base compares figures measured a few seconds
// apart. variants[0] must be the base.
std::vector<VariantResult> run_variant_bench(const LlamaModel& model, ThreadPool& pool,
                                             const std::vector<BenchVariant>& variants, const BenchOptions& options,
                                             const BenchProgress& progress);

std::vector<BenchResult> run_bench(const LlamaModel& model, ThreadPool& pool, const BenchOptions& options,
                                   const BenchProgress& progress);

}  // namespace flora
