// flora bench: a llama-bench style table of prompt processing and token
// generation speed, with decode time stated against the memory-bandwidth limit.
#include "bench/bench.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "ops/ops.h"
#include "util/file.h"

namespace flora::cli {

void add_bench(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("bench",
                                 "Measure prompt processing and generation speed (medians of interleaved repetitions)");
  struct Options {
    std::string model, json_out;
    bool json = false, mmap = false;
    int threads = 1;
    BenchOptions bench;
  };
  auto o = std::make_shared<Options>();
  o->threads = default_thread_count();
  cmd->add_option("-m,--model", o->model, "Model directory")->required();
  cmd->add_option("-p,--n-prompt", o->bench.n_prompt, "Prompt tokens of the pp test (0: skip)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("-n,--n-gen", o->bench.n_gen, "Generated tokens of the tg test (0: skip)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("-r,--repetitions", o->bench.repetitions, "Repetitions; every figure is their median")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("-t,--threads", o->threads, "Threads")->check(CLI::Range(1, 1024))->capture_default_str();
  cmd->add_flag("--json", o->json, "Print the results as JSON (one object per test) instead of a table");
  add_mmap_option(cmd, o->mmap);
  cmd->add_option("--json-out", o->json_out, "Also write the JSON to this file");
  cmd->callback([&action, o] {
    action = [o] {
      auto model = LlamaModel::load(o->model, o->mmap);
      ThreadPool pool(o->threads);
      const LlamaConfig& cfg = model->config();
      std::string name = std::filesystem::path(o->model).filename().string();
      if (name.empty()) name = std::filesystem::path(o->model).parent_path().filename().string();
      const double gib = static_cast<double>(model->weight_bytes()) / (1024.0 * 1024.0 * 1024.0);
      const bool tty = ::isatty(2);
      auto results = run_bench(*model, pool, o->bench, [tty](const std::string& what) {
        std::fprintf(stderr, tty ? "\rbench: %-40s" : "bench: %s\n", what.c_str());
        std::fflush(stderr);
      });
      if (tty) std::fprintf(stderr, "\r%-50s\r", "");
      Json all = Json::array();
      for (const auto& r : results) {
        Json j = r.to_json();
        j["model"] = o->model;
        j["params"] = cfg.parameter_count();
        j["weight_bytes"] = model->weight_bytes();
        j["decode_weight_bytes"] = model->decode_weight_bytes();
        j["threads"] = o->threads;
        j["simd"] = ops::simd_target_name();
        j["repetitions"] = o->bench.repetitions;
        j["weights"] = o->mmap ? "mmap" : "huge-page copy";
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
        std::printf("| %s %s | %.2f GiB | %.2f B | CPU %s | %d | %s | %.2f | %.2f | %.1f | %.2f | %.2f |\n",
                    name.c_str(), cfg.torch_dtype.c_str(), gib, cfg.parameter_count() / 1e9,
                    ops::simd_target_name().c_str(), o->threads, r.test.c_str(), r.tokens_per_s, r.ms_per_token,
                    r.bandwidth_gbs, r.bandwidth_limit_ms, r.roofline_ratio);
      std::printf(
          "\nweights: %s; medians of %d interleaved repetitions; bandwidth: a %zu MiB read loop beside each test; "
          "limit: %.2f GB of "
          "weights read per forward call / bandwidth, per token; x limit: median of per-repetition ratios.\n",
          o->mmap ? "memory-mapped (--mmap)" : "copied into huge pages", o->bench.repetitions,
          o->bench.bandwidth_bytes >> 20, model->decode_weight_bytes() / 1e9);
    };
  });
}

}  // namespace flora::cli
