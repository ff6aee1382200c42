// Model-driven evaluation behind `flora eval`: records (eval/tasks.h) in,
// generated answers scored as `flora score` scores them (eval/score.h), or
// log-likelihoods of the options, or perplexity; metrics and every example's
// prompt, output and verdict out.
//
// Generation is batched (model/generate.h: generate_batched): up to `batch`
// sequences decode together, each with its own KV-cache slot and stop
// condition, new prompts joining as slots free. Greedy unless a temperature is
// given; with one, example i samples with seed + i, so that its output does not
// depend on the batch size.
//
// mcq --mcq-mode loglik: no generation. For each record the options'
// continuations, continuation_prefix + label ("the correct answer is answer2":
// what a model trained on LLM-Adapters' data writes; for plain records the
// answerK label its prompt asks for), are scored by their summed log-probability
// given the prompt (tokenized apart from the prompt, no bos). "accuracy" picks
// the highest sum, "accuracy_norm" the highest mean per continuation token.
// The prompt runs once per record; each continuation runs after it (the KV
// cache truncated back to the prompt), the records of a batch side by side.
//
// ppl: every document is [bos] + its tokens, scored with the sliding windows of
// ppl_windows(); perplexity = exp(total NLL / scored tokens) over all documents
// (natural log).
//
// Under `mpirun -np N` (dist/dist.h) each rank runs the model on a contiguous
// share of the records (dist::share), the per-record results (generated
// tokens, log-likelihoods, NLLs) are gathered to every rank, and each scores
// all records in record order: the metrics, counts and examples are those of
// one process, bit for bit (a record's results do not depend on the records
// beside it, and sampling seeds follow the record's index). Only the `speed`
// block of results.json says how the run went (times, forward calls summed
// over the ranks).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "eval/tasks.h"
#include "model/adapter_exec.h"
#include "model/sampler.h"
#include "model/weights.h"
#include "tokenizer/tokenizer.h"
#include "util/json.h"
#include "util/threads.h"

namespace flora::eval {

enum class McqMode { Generate, Loglik };
McqMode parse_mcq_mode(const std::string& name);  // "generate" | "loglik"
const char* mcq_mode_name(McqMode mode);

struct EvalSettings {
  EvalTask task = EvalTask::Mcq;
  McqMode mcq_mode = McqMode::Generate;
  int64_t max_new_tokens = 0;  // 0: default_max_new_tokens(task)
  int batch = 8;               // sequences in flight
  SamplerParams sampling{0.0f, 40, 0.95f, 0};
  int64_t ppl_window = 0;  // 0: min(1024, the model's max_position_embeddings)
  int64_t ppl_stride = 0;  // 0: window / 2
  // The values in force once the model is known (defaults resolved).
  EvalSettings resolved(const LlamaConfig& config) const;
  Json to_json() const;
};

// What evaluation runs on; nothing owned.
struct EvalModel {
  const LlamaModel* model = nullptr;
  const Tokenizer* tokenizer = nullptr;
  ThreadPool* pool = nullptr;
  const AdapterExec* adapter = nullptr;               // FLoRA or unmerged LoRA
  const std::vector<LayerWeights>* layers = nullptr;  // merged LoRA
};

struct EvalProgress {
  size_t done = 0, total = 0;  // records
  int64_t tokens = 0;          // tokens run through the model so far (prompts, continuations, generated)
  double seconds = 0;
};
using EvalProgressFn = std::function<void(const EvalProgress&)>;

struct EvalResult {
  EvalSettings settings;  // resolved
  size_t count = 0;       // records evaluated
  // mcq (generate), math: accuracy, unparseable; mcq (loglik): accuracy,
  // accuracy_norm; rouge: rouge1, rouge2, rougeL; ppl: perplexity, nll.
  std::vector<std::pair<std::string, double>> metrics;
  Json counts;                   // task-specific counts: correct, unparseable, scored_tokens, ...
  std::vector<Json> examples;    // the lines of examples.jsonl, in record order
  int64_t prompt_tokens = 0;     // prompts (and loglik continuations, ppl windows) run
  int64_t generated_tokens = 0;  // generated (generation modes)
  int64_t forward_calls = 0;     // generation modes: batched forward calls (summed over the ranks)
  double seconds = 0;
  double metric(const std::string& name) const;  // fails if absent
};

EvalResult evaluate(const EvalModel& model, const RecordSet& data, const EvalSettings& settings,
                    const EvalProgressFn& progress = {});

// results.json: task, mode, metrics, counts, the run's description (`run`:
// model, adapter, data, threads, ...), settings and speed.
Json results_json(const EvalResult& result, const RecordSet& data, const Json& run);
// results.md: the same as a markdown table.
std::string results_markdown(const EvalResult& result, const RecordSet& data, const Json& run);
// DIR/results.json, DIR/results.md, DIR/examples.jsonl, each written atomically.
void write_eval_outputs(const std::string& dir, const EvalResult& result, const RecordSet& data, const Json& run);

// ---- speed of batched generation ----

struct BatchBenchResult {
  int batch = 0;
  int64_t n_prompt = 0, n_gen = 0;
  double step_ms = 0;               // median over repetitions of the median decode step (all rows of the batch)
  double tokens_per_s = 0;          // batch / step time
  double prefill_tokens_per_s = 0;  // median: the batch's prompts in one call
  double sync_points_per_step = 0;
  std::vector<double> step_samples_ms;  // each repetition's median step
};

// Decode speed at each batch size: `batch` random prompts of n_prompt tokens
// prefilled together, then n_gen greedy steps with every sequence in the batch.
// Repetitions interleave the batch sizes (the first rotating), after one
// untimed warm-up pass of each.
std::vector<BatchBenchResult> bench_batched_generation(const EvalModel& model, const std::vector<int>& batches,
                                                       int64_t n_prompt, int64_t n_gen, int repetitions,
                                                       const std::function<void(const std::string&)>& progress);

}  // namespace flora::eval
