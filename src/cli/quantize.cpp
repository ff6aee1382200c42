// flora quantize: a model directory written as a GGUF file that llama.cpp
// loads (model/gguf_llama.h), every matrix in the type asked for.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli/commands.h"
#include "model/gguf_llama.h"
#include "util/error.h"
#include "util/progress.h"
#include "util/timer.h"

namespace flora::cli {

void add_quantize(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("quantize", "Write a model directory as a GGUF file (llama.cpp's format)");
  struct Options {
    std::string model, type, out;
    int threads = 1;
  };
  auto o = std::make_shared<Options>();
  add_threads_option(cmd, o->threads);
  cmd->add_option("-m,--model", o->model, "Model directory (config.json, safetensors, tokenizer.json)")->required();
  cmd->add_option("--type", o->type, "Type of the matrices: " + gguf_out_type_names())->required();
  cmd->add_option("--out", o->out, "Output file (.gguf)")->required();
  cmd->callback([&action, o] {
    action = [o] {
      const auto type = parse_gguf_out_type(o->type);
      if (!type) fail("--type: expected {}, found '{}'", gguf_out_type_names(), o->type);
      if (!std::filesystem::is_directory(o->model)) fail("-m {}: not a model directory", o->model);
      const double t0 = now_seconds();
      std::unique_ptr<Progress> progress;
      int64_t matrices = 0;
      write_llama_gguf(o->model, o->out, *type, [&](int64_t done, int64_t total, const std::string& name) {
        if (!progress) progress = std::make_unique<Progress>("matrix", total);
        progress->update(done, name);
        matrices = total;
      }, o->threads);
      std::error_code ec;
      const auto bytes = std::filesystem::file_size(o->out, ec);
      const std::string summary =
          fmt::format("{} -> {} ({}, {} matrices, {:.1f} MB) in {:.1f} s", o->model, o->out, o->type, matrices,
                      ec ? 0.0 : static_cast<double>(bytes) / 1e6, now_seconds() - t0);
      if (progress) {
        progress->update(matrices, "");
        progress->finish(summary);
      }
      else
        std::fprintf(stderr, "quantize: %s\n", summary.c_str());
    };
  });
}

}  // namespace flora::cli
