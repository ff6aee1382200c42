// flora eval: evaluate a model (with an adapter) on a data set: multiple
// choice, math, summaries (ROUGE) or perplexity (eval/evaluate.h). Prints the
// results table and writes DIR/results.json, DIR/results.md and
// DIR/examples.jsonl. With --bench-batch it measures batched generation speed
// instead.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <memory>
#include <optional>

#include "cli/commands.h"
#include "dist/dist.h"
#include "eval/evaluate.h"
#include "model/gguf_llama.h"
#include "ops/ops.h"
#include "util/error.h"
#include "util/progress.h"

namespace flora::cli {

namespace {

struct EvalOptions {
  std::string model, adapter, lora_variant, task, data, out, mcq_mode = "generate", bench_batch;
  size_t limit = 0;
  bool skip_bad = false;
  ModelLoadOptions load;
  int threads = 1, bench_reps = 3;
  int64_t bench_prompt = 64, bench_gen = 32;
  eval::EvalSettings settings;
};

std::string timestamp() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", &tm);
  return buf;
}

std::vector<int> parse_batch_list(const std::string& text) {
  std::vector<int> out;
  for (int32_t v : parse_token_list(text, "--bench-batch")) out.push_back(static_cast<int>(v));
  return out;
}

std::string model_name(const std::string& dir) {
  std::string name = std::filesystem::path(dir).filename().string();
  if (name.empty()) name = std::filesystem::path(dir).parent_path().filename().string();
  return name;
}

void run_bench(const EvalOptions& o, const eval::EvalModel& m) {
  // Each alone first, so that their sum cannot overflow.
  check_fits_context(*m.model, "--bench-prompt", o.bench_prompt);
  check_fits_context(*m.model, "--bench-gen", o.bench_gen);
  check_fits_context(*m.model, "--bench-prompt + --bench-gen", o.bench_prompt + o.bench_gen);
  const bool tty = ::isatty(2);
  const auto results = eval::bench_batched_generation(
      m, parse_batch_list(o.bench_batch), o.bench_prompt, o.bench_gen, o.bench_reps, [tty](const std::string& what) {
        std::fprintf(stderr, tty ? "\r\033[Kbench: %s" : "bench: %s\n", what.c_str());
        std::fflush(stderr);
      });
  if (tty) std::fprintf(stderr, "\r\033[K");
  double base = 0;
  for (const auto& r : results)
    if (r.batch == 1) base = r.tokens_per_s;
  std::printf(
      "| model | batch | prompt | generated | step ms | tokens/s | x batch 1 | prefill tokens/s | sync points / step | "
      "step ms per repetition |\n");
  std::printf("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
  for (const auto& r : results) {
    std::string samples;
    for (double s : r.step_samples_ms) samples += fmt::format("{}{:.1f}", samples.empty() ? "" : " ", s);
    std::printf("| %s | %d | %lld | %lld | %.2f | %.2f | %s | %.1f | %.0f | %s |\n", model_name(o.model).c_str(),
                r.batch, static_cast<long long>(r.n_prompt), static_cast<long long>(r.n_gen), r.step_ms, r.tokens_per_s,
                base > 0 ? fmt::format("{:.2f}", r.tokens_per_s / base).c_str() : "—", r.prefill_tokens_per_s,
                r.sync_points_per_step, samples.c_str());
  }
  std::printf(
      "\n%d threads; step: one decode step of every sequence of the batch (median over its %lld steps, then over %d "
      "repetitions, batch sizes interleaved); tokens/s = batch / step.\n",
      o.threads, static_cast<long long>(o.bench_gen), o.bench_reps);
}

void run_eval(const EvalOptions& o) {
  using namespace flora::eval;
  EvalSettings settings = o.settings;
  settings.task = parse_eval_task(o.task);
  settings.mcq_mode = parse_mcq_mode(o.mcq_mode);
  if (settings.mcq_mode == McqMode::Loglik && settings.task != EvalTask::Mcq)
    fail("--mcq-mode loglik: expected --task mcq, found --task {}", o.task);
  // The data first: a bad record fails before the model loads.
  const RecordSet data = read_records(o.data, settings.task, o.skip_bad, o.limit);
  for (const auto& msg : data.skip_messages)
    if (dist::rank() == 0) std::fprintf(stderr, "flora eval: skipped %s\n", msg.c_str());
  auto model = load_model(o.model, o.load);
  // No sequence grows past the context, so a larger --max-new-tokens means the
  // same as the context and is clipped to it: evaluate() adds it to prompt
  // lengths, which must not overflow.
  settings.max_new_tokens = std::min(settings.max_new_tokens, model->config().max_position_embeddings);
  const Tokenizer tok = load_model_tokenizer(o.model);
  ThreadPool pool(o.threads);
  const auto adapter = attach_adapter(*model, o.adapter, o.lora_variant);
  const EvalModel m{model.get(), &tok, &pool, adapter ? adapter->exec() : nullptr,
                    adapter ? adapter->layers() : nullptr};
  // Under mpirun each rank runs its share of the records; rank 0 alone shows its progress and writes.
  const bool lead = dist::rank() == 0;
  const dist::Share mine = dist::my_share(static_cast<int64_t>(data.records.size()));
  std::optional<Progress> progress;
  if (lead) progress.emplace("example", mine.end - mine.begin);
  double last_rate = 0;
  const EvalResult r = evaluate(m, data, settings, [&](const EvalProgress& p) {
    last_rate = p.seconds > 0 ? static_cast<double>(p.tokens) / p.seconds : 0.0;
    if (progress) progress->update(static_cast<int64_t>(p.done), fmt::format("{:.1f} tokens/s", last_rate));
  });
  if (!lead) return;
  progress->finish(fmt::format("{:.1f} tokens/s", last_rate));

  Json run;
  run["model"] = o.model;
  run["adapter"] = o.adapter.empty() ? Json(nullptr) : Json(o.adapter);
  run["adapter_variant"] = adapter ? Json(adapter->variant()) : Json(nullptr);
  run["threads"] = o.threads;
  run["products"] = ops::products_name();  // of the base's BF16 matrices (ops.h: the activations' rounding)
  run["limit"] = o.limit;
  const std::string dir = o.out.empty() ? fmt::format("out/eval-{}-{}", o.task, timestamp()) : o.out;
  write_eval_outputs(dir, r, data, run);
  const std::string md = results_markdown(r, data, run);
  std::fwrite(md.data(), 1, md.size(), stdout);
  std::fprintf(stderr, "flora eval: wrote %s/results.json, %s/results.md and %s/examples.jsonl\n", dir.c_str(),
               dir.c_str(), dir.c_str());
}

}  // namespace

void add_eval(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand(
      "eval", "Evaluate a model on a data set: multiple choice, math, summaries (ROUGE) or perplexity");
  auto o = std::make_shared<EvalOptions>();
  cmd->add_option("-m,--model", o->model, "Model directory (config.json, safetensors, tokenizer.json) or .gguf file")
      ->required();
  add_adapter_options(cmd, o->adapter, o->lora_variant);
  cmd->add_option("--task", o->task, "Task kind")->check(CLI::IsMember({"mcq", "math", "rouge", "ppl"}));
  cmd->add_option("--data", o->data,
                  "Records: JSON lines or a JSON array (mcq: LLM-Adapters {instruction, input, output, answer} or "
                  "{question, choices, answer}; math: LLM-Adapters or GSM8K {question, answer}; rouge: {dialogue, "
                  "summary} or {document, summary}; ppl: {text} lines, or any other file as plain text)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--limit", o->limit, "Evaluate only the first N records (0: all)")->capture_default_str();
  cmd->add_option("--out", o->out, "Output directory (default out/eval-TASK-YYYYmmdd-HHMMSS)");
  cmd->add_option("--mcq-mode", o->mcq_mode,
                  "mcq: generate an answer and extract it, or compare the options' log-likelihoods")
      ->check(CLI::IsMember({"generate", "loglik"}))
      ->capture_default_str();
  cmd->add_option("--max-new-tokens", o->settings.max_new_tokens,
                  "Most tokens generated per example (default: mcq 32, math 256, rouge 128)")
      ->check(token_count_check() & CLI::PositiveNumber);
  cmd->add_option("--batch", o->settings.batch, "Sequences generated together")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  cmd->add_option("--temp", o->settings.sampling.temperature, "Sampling temperature (0: greedy)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--top-k", o->settings.sampling.top_k, "With --temp: keep the k most likely tokens (0: all)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--top-p", o->settings.sampling.top_p, "With --temp: nucleus probability")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--seed", o->settings.sampling.seed, "With --temp: example i samples with seed + i")
      ->capture_default_str();
  cmd->add_option("--ppl-window", o->settings.ppl_window, "ppl: tokens per window (default min(1024, context))")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--ppl-stride", o->settings.ppl_stride, "ppl: tokens between window starts (default window / 2)")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--skip-bad", o->skip_bad, "Skip (and count) malformed records instead of failing");
  add_threads_option(cmd, o->threads);
  add_model_load_options(cmd, o->load);
  cmd->add_option("--bench-batch", o->bench_batch,
                  "Instead of evaluating: measure batched generation at these batch sizes, e.g. 1,4,16 (random "
                  "prompts; no --task or --data)");
  cmd->add_option("--bench-prompt", o->bench_prompt, "--bench-batch: prompt tokens per sequence")
      ->check(token_count_check() & CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--bench-gen", o->bench_gen, "--bench-batch: decode steps timed per repetition")
      ->check(token_count_check() & CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--bench-reps", o->bench_reps, "--bench-batch: repetitions (medians)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->callback([&action, o] {
    if (o->bench_batch.empty()) {
      if (o->task.empty()) throw CLI::RequiredError("--task");
      if (o->data.empty()) throw CLI::RequiredError("--data");
    }
    action = [o] {
      if (o->bench_batch.empty()) {
        run_eval(*o);
        return;
      }
      auto model = load_model(o->model, o->load);
      ThreadPool pool(o->threads);
      const auto adapter = attach_adapter(*model, o->adapter, o->lora_variant);
      const eval::EvalModel m{model.get(), nullptr, &pool, adapter ? adapter->exec() : nullptr,
                              adapter ? adapter->layers() : nullptr};
      run_bench(*o, m);
    };
  });
}

}  // namespace flora::cli
