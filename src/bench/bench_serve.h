// `flora bench --serve`: the serving scheduler's decode speed with N streams
// in one batch, each stream on the base or on an adapter of its own, against
// the base at the same N. It drives serve::Scheduler directly, without HTTP:
// what is measured is the engine's step, not the socket.
//
// Every run submits N requests of the same prompt length before the loop
// starts, greedy, max_tokens n and no stop tokens, so they are admitted in one
// step, prefilled in one step and decode in lockstep until they all end at
// once. The figures come from the scheduler's StepRecords of the steps in
// which all N rows decode (no prefill rows): per-stream TPOT is their median
// step, aggregate tokens/s is N / TPOT.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "bench/bench.h"
#include "tokenizer/tokenizer.h"

namespace flora {

// One configuration of a serving run: stream i runs adapters[i % size()]
// (none: every stream on the base). Merged LoRA (BenchVariant::layers) has no
// place here: it replaces the weights of every row in the batch.
struct ServeConfig {
  std::string name;  // "base", "ffba x4", ...
  std::vector<BenchVariant> adapters;
};

struct ServeResult {
  std::string config;
  int streams = 0;
  int64_t adapters = 0;      // distinct adapters in a measured step (StepRecord::adapters)
  int64_t decode_steps = 0;  // measured steps (every stream decoding, no prefill), fewest of any repetition
  double tpot_ms = 0;        // median over repetitions of the median measured step
  double tokens_per_s = 0;   // streams / TPOT
  double overhead_pct = 0;   // median over repetitions of (TPOT / base TPOT at this N, same repetition - 1) * 100
  double bandwidth_gbs = 0;  // median of the read bandwidth measured beside each run
  // Weights a step reads: the base's decode bytes plus each distinct adapter's.
  double weight_bytes = 0;
  double bandwidth_limit_ms = 0;  // weight_bytes / bandwidth
  double roofline_ratio = 0;      // median over repetitions of TPOT / that repetition's limit
  double sync_points_per_step = 0;
  std::vector<double> tpot_samples_ms, bandwidth_samples_gbs;
  Json to_json() const;
};

// Within each repetition, for each N of `streams`, every configuration runs
// once (the starting one rotating), so that each ratio to the base compares
// figures measured seconds apart. configs[0] must be the base. Uses
// options.n_prompt (prompt tokens per stream), n_gen (tokens per stream, at
// least 2: the first comes from the prefill step), repetitions, seed and
// bandwidth_bytes. Results: streams-major, configs in the order given.
std::vector<ServeResult> run_serve_bench(const LlamaModel& model, ThreadPool& pool, const Tokenizer& tokenizer,
                                         const std::vector<ServeConfig>& configs, const std::vector<int>& streams,
                                         const BenchOptions& options, const BenchProgress& progress);

}  // namespace flora
