// flora bench: a llama-bench style table of prompt processing and token
// generation speed, with decode time stated against the memory-bandwidth limit.
#include "bench/bench.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "adapters/exec.h"
#include "bench/bench_serve.h"
#include "cli/commands.h"
#include "model/gguf_llama.h"
#include "ops/ops.h"
#include "serve/adapter_loader.h"
#include "util/file.h"

namespace flora::cli {

namespace {

struct Options {
  std::string model, json_out;
  bool json = false;
  ModelLoadOptions load;
  std::string variants, adapter, lora_variant = "lora", adapter_dtype = "f32";
  bool serve = false;
  std::string streams = "1,4,16";
  int64_t rank = 32;
  double alpha = 0;
  int threads = 1;
  BenchOptions bench;
};

// Progress on stderr: one line rewritten in place on a terminal, else a line per event.
BenchProgress progress_printer(bool tty) {
  return [tty](const std::string& what) {
    std::fprintf(stderr, tty ? "\rbench: %-50s" : "bench: %s\n", what.c_str());
    std::fflush(stderr);
  };
}

std::vector<std::string> split_list(const std::string& list) {
  std::vector<std::string> items;
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t end = list.find(',', pos);
    if (end == std::string::npos) end = list.size();
    if (end > pos) items.push_back(list.substr(pos, end - pos));
    pos = end + 1;
  }
  return items;
}

DType adapter_dtype(const Options& o) { return o.adapter_dtype == "bf16" ? DType::BF16 : DType::F32; }

std::unique_ptr<AttachedAdapter> make_random(const Options& o, const LlamaModel& model, const std::string& variant,
                                             uint64_t seed) {
  std::fprintf(stderr, "bench: making a random %s adapter of rank %lld (seed %llu)\n", variant.c_str(),
               static_cast<long long>(o.rank), static_cast<unsigned long long>(seed));
  return make_random_adapter(model, variant, o.rank, o.alpha, adapter_dtype(o), seed);
}

// flora bench --variants: every variant a random adapter of the same rank,
// interleaved repetition by repetition with the base.
// Each result as JSON with the run's fields added; written to --json-out, and
// printed with --json, in which case it returns true (no table).
template <typename Result>
bool emit_json(const std::vector<Result>& results, const Options& o, const Json& run) {
  Json all = Json::array();
  for (const auto& r : results) {
    Json j = r.to_json();
    j.update(run);
    all.push_back(j);
  }
  if (!o.json_out.empty()) write_file_atomic(o.json_out, all.dump(2) + "\n");
  if (o.json) std::printf("%s\n", all.dump(2).c_str());
  return o.json;
}

void run_variants(const Options& o, const LlamaModel& model, ThreadPool& pool, bool tty, const std::string& name) {
  std::vector<std::unique_ptr<AttachedAdapter>> attached;
  std::vector<BenchVariant> variants = {{"base"}};
  auto add = [&](std::unique_ptr<AttachedAdapter> a) {
    variants.push_back(bench_variant(*a, adapter_dtype(o)));
    attached.push_back(std::move(a));
  };
  for (const std::string& v : split_list(o.variants)) {
    if (v == "base") continue;
    add(make_random(o, model, v, 1));
  }
  if (!o.adapter.empty()) add(attach_adapter(model, o.adapter, o.lora_variant));
  auto results = run_variant_bench(model, pool, variants, o.bench, progress_printer(tty));
  if (tty) std::fprintf(stderr, "\r%-60s\r", "");
  if (emit_json(results, o,
                {{"model", o.model},
                 {"threads", o.threads},
                 {"n_prompt", o.bench.n_prompt},
                 {"n_gen", o.bench.n_gen},
                 {"repetitions", o.bench.repetitions},
                 {"weight_bytes", model.decode_weight_bytes()},
                 {"cpu_target", ops::simd_target_name()},
                 {"products", ops::products_name()}}))
    return;
  const double base_bytes = static_cast<double>(model.decode_weight_bytes());
  std::printf(
      "| model | variant | rank | adapter params | adapter MB | extra bytes %% | TTFT ms (pp%lld) | TPOT ms | "
      "TPOT overhead %% | sync points / token |\n",
      static_cast<long long>(o.bench.n_prompt));
  std::printf("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
  for (const auto& r : results)
    std::printf("| %s | %s | %lld | %lld | %.1f | %.2f | %.1f | %.2f | %+.1f | %.0f |\n", name.c_str(),
                r.variant.c_str(), static_cast<long long>(r.rank), static_cast<long long>(r.adapter_params),
                r.adapter_bytes / 1e6, 100.0 * static_cast<double>(r.adapter_bytes) / base_bytes, r.ttft_ms, r.tpot_ms,
                r.overhead_pct, r.sync_points_per_token);
  std::printf(
      "\n%d threads; medians of %d repetitions, variants interleaved within each; overhead: median of the "
      "per-repetition ratio to the base; extra bytes: adapter bytes (%s) / base weight bytes read per token.\n",
      o.threads, o.bench.repetitions, o.adapter_dtype.c_str());
  std::printf("Memory bandwidth %.1f GB/s (median of read loops between the repetitions, %s kernels): the base's "
              "TPOT is %.2fx the time to read its %.1f MB of weights once.\n",
              results[0].bandwidth_gbs, ops::simd_target_name().c_str(), results[0].roofline_ratio, base_bytes / 1e6);
}

// flora bench --serve: the base, then per variant every stream on one random
// adapter ("x1") and on four different ones, stream i on adapter i mod 4 ("x4").
void run_serve(const Options& o, const LlamaModel& model, ThreadPool& pool, bool tty, const std::string& name) {
  constexpr int kMixed = 4;
  if (!o.adapter.empty()) fail("bench --serve: --adapter is not supported (random adapters of --rank only)");
  std::vector<int> streams;
  for (int32_t v : parse_token_list(o.streams, "--streams")) streams.push_back(static_cast<int>(v));
  const Tokenizer tokenizer = load_model_tokenizer(o.model);
  std::vector<std::unique_ptr<AttachedAdapter>> attached;
  std::vector<ServeConfig> configs = {{"base", {}}};
  for (const std::string& v : split_list(o.variants.empty() ? "ffba,lora" : o.variants)) {
    if (v == "base") continue;
    if (v == "lora-merged") fail("bench --serve: lora-merged: {}", serve::merged_lora_refusal());
    std::vector<BenchVariant> mixed;
    for (int k = 0; k < kMixed; ++k) {
      attached.push_back(make_random(o, model, v, static_cast<uint64_t>(k + 1)));
      mixed.push_back(bench_variant(*attached.back(), adapter_dtype(o)));
    }
    configs.push_back({v + " x1", {mixed[0]}});
    configs.push_back({fmt::format("{} x{}", v, kMixed), mixed});
  }
  auto results = run_serve_bench(model, pool, tokenizer, configs, streams, o.bench, progress_printer(tty));
  if (tty) std::fprintf(stderr, "\r%-60s\r", "");
  if (emit_json(results, o,
                {{"model", o.model},
                 {"threads", o.threads},
                 {"simd", ops::simd_target_name()},
                 {"products", ops::products_name()},
                 {"rank", o.rank},
                 {"adapter_dtype", o.adapter_dtype},
                 {"n_prompt", o.bench.n_prompt},
                 {"n_gen", o.bench.n_gen},
                 {"repetitions", o.bench.repetitions},
                 {"base_weight_bytes", model.decode_weight_bytes()}}))
    return;
  std::printf(
      "| model | streams | config | adapters / step | TPOT ms | tokens/s | TPOT vs base %% | weights GB / step | "
      "bandwidth GB/s | limit ms | x limit | sync points / step |\n");
  std::printf("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
  for (const auto& r : results)
    std::printf("| %s | %d | %s | %lld | %.2f | %.2f | %+.1f | %.3f | %.1f | %.2f | %.2f | %.0f |\n", name.c_str(),
                r.streams, r.config.c_str(), static_cast<long long>(r.adapters), r.tpot_ms, r.tokens_per_s,
                r.overhead_pct, r.weight_bytes / 1e9, r.bandwidth_gbs, r.bandwidth_limit_ms, r.roofline_ratio,
                r.sync_points_per_step);
  std::printf(
      "\n%d threads; N streams of %lld prompt tokens, %lld generated each (greedy, no stop tokens), submitted at once "
      "to serve::Scheduler (no HTTP); TPOT: median over %d repetitions (configurations interleaved within each) of "
      "the median step with all N streams decoding; tokens/s = N / TPOT; vs base: median of the per-repetition "
      "ratio at the same N; weights: the base's decode bytes + the distinct adapters' (%s); limit: weights / "
      "bandwidth.\n",
      o.threads, static_cast<long long>(o.bench.n_prompt), static_cast<long long>(o.bench.n_gen), o.bench.repetitions,
      o.adapter_dtype.c_str());
}

}  // namespace

void add_bench(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("bench",
                                 "Measure prompt processing and generation speed (medians of interleaved repetitions)");
  auto o = std::make_shared<Options>();
  cmd->add_option("-m,--model", o->model, "Model directory")->required();
  cmd->add_option("-p,--n-prompt", o->bench.n_prompt, "Prompt tokens of the pp test (0: skip)")
      ->check(token_count_check())
      ->capture_default_str();
  cmd->add_option("-n,--n-gen", o->bench.n_gen, "Generated tokens of the tg test (0: skip)")
      ->check(token_count_check())
      ->capture_default_str();
  cmd->add_option("-r,--repetitions", o->bench.repetitions, "Repetitions; every figure is their median")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  add_threads_option(cmd, o->threads);
  cmd->add_flag("--json", o->json, "Print the results as JSON (one object per test) instead of a table");
  add_model_load_options(cmd, o->load);
  cmd->add_option("--variants", o->variants,
                  "Compare adapter variants, e.g. base,lora,pf-lora,lora-merged,ffa,ffba,ffba-aorb,ffba-qg,ffba-relu "
                  "(random adapters of --rank made on the fly; TTFT of -p tokens, TPOT of -n)");
  cmd->add_option("--rank", o->rank, "Rank of the random adapters (ffa stores 2x)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--adapter-dtype", o->adapter_dtype, "Run the random adapters as f32 or as a bf16 copy")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  cmd->add_option("--alpha", o->alpha, "lora_alpha of the random adapters (default: 2 x the stored rank)");
  cmd->add_option("--adapter", o->adapter, "With --variants: also run this adapter directory")
      ->check(CLI::ExistingPath);
  cmd->add_option("--json-out", o->json_out, "Also write the JSON to this file");
  cmd->add_flag("--serve", o->serve,
                "Serving: N concurrent streams through the scheduler, base against --variants (default ffba,lora), "
                "each on one random adapter and on 4 mixed; -p and -n per stream (defaults here 16 and 32)");
  cmd->add_option("--streams", o->streams, "With --serve: the stream counts N")->capture_default_str();
  cmd->callback([&action, o, cmd] {
    if (o->serve) {
      // A pp512 prompt per stream would make the 16-stream prefill the whole run.
      if (cmd->count("-p") == 0) o->bench.n_prompt = 16;
      if (cmd->count("-n") == 0) o->bench.n_gen = 32;
    }
    action = [o] {
      auto model = load_model(o->model, o->load);
      check_fits_context(*model, "-p", o->bench.n_prompt);
      check_fits_context(*model, "-n", o->bench.n_gen);
      // --variants decodes -n tokens after the -p of the prompt in one context.
      if (!o->variants.empty() && !o->serve) check_fits_context(*model, "-p + -n", o->bench.n_prompt + o->bench.n_gen);
      ThreadPool pool(o->threads);
      const bool tty = ::isatty(2);
      const LlamaConfig& cfg = model->config();
      std::string name = std::filesystem::path(o->model).filename().string();
      if (name.empty()) name = std::filesystem::path(o->model).parent_path().filename().string();
      const double gib = static_cast<double>(model->weight_bytes()) / (1024.0 * 1024.0 * 1024.0);
      if (o->serve) {
        check_fits_context(*model, "-p + -n", o->bench.n_prompt + o->bench.n_gen);
        run_serve(*o, *model, pool, tty, name);
        return;
      }
      if (!o->variants.empty()) {
        run_variants(*o, *model, pool, tty, name);
        return;
      }
      auto results = run_bench(*model, pool, o->bench, progress_printer(tty));
      if (tty) std::fprintf(stderr, "\r%-60s\r", "");
      Json all = Json::array();
      for (const auto& r : results) {
        Json j = r.to_json();
        j["model"] = o->model;
        j["params"] = cfg.parameter_count();
        j["weight_bytes"] = model->weight_bytes();
        j["decode_weight_bytes"] = model->decode_weight_bytes();
        j["threads"] = o->threads;
        j["simd"] = ops::simd_target_name();
        j["products"] = ops::products_name();
        j["repetitions"] = o->bench.repetitions;
        j["weights"] = o->load.mmap ? "mmap" : "huge-page copy";
        all.push_back(j);
      }
      if (!o->json_out.empty()) write_file_atomic(o->json_out, all.dump(2) + "\n");
      if (o->json) {
        std::printf("%s\n", all.dump(2).c_str());
        return;
      }
      std::printf(
          "| model | size | params | backend | threads | test | t/s | ms/token | bandwidth GB/s | limit ms/token | x "
          "limit |\n");
      std::printf("| --- | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |\n");
      for (const auto& r : results)
        std::printf("| %s %s | %.2f GiB | %.2f B | CPU %s%s | %d | %s | %.2f | %.2f | %.1f | %.2f | %.2f |\n",
                    name.c_str(), cfg.torch_dtype.c_str(), gib, cfg.parameter_count() / 1e9,
                    ops::simd_target_name().c_str(), ops::products_name() == "bf16" ? " bf16-dot" : "", o->threads, r.test.c_str(), r.tokens_per_s, r.ms_per_token,
                    r.bandwidth_gbs, r.bandwidth_limit_ms, r.roofline_ratio);
      std::printf(
          "\nweights: %s; medians of %d interleaved repetitions; bandwidth: a %zu MiB read loop beside each test; "
          "limit: %.2f GB of "
          "weights read per forward call / bandwidth, per token; x limit: median of per-repetition ratios.\n",
          o->load.mmap ? "memory-mapped (--mmap)" : "copied into huge pages", o->bench.repetitions,
          o->bench.bandwidth_bytes >> 20, model->decode_weight_bytes() / 1e9);
    };
  });
}

void add_cpu(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand(
      "cpu", "Print the SIMD target the kernels dispatch to (FLORA_CPU=avx512|avx2|sse4|scalar caps it)");
  auto all = std::make_shared<bool>(false);
  cmd->add_flag("--all", *all, "Also list every target this binary and CPU support, best first");
  cmd->callback([&action, all] {
    action = [all] {
      std::printf("%s\n", ops::simd_target_name().c_str());
      if (*all)
        for (int64_t t : ops::simd_targets_available()) std::printf("  %s\n", ops::simd_target_name(t).c_str());
      if (*all)
        std::printf("BF16 dot products (AVX512_BF16, --products bf16): %s\n",
                    ops::bf16_dot_available() ? "yes" : "no");
    };
  });
}

}  // namespace flora::cli
