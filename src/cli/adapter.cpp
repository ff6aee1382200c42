// flora init-adapter: a new adapter directory (adapter_config.json and
// adapter_model.safetensors) shaped for a model; flora merge: a LoRA (or
// repeat-and-add-only FLoRA) adapter merged into a copy of the model.
#include "adapters/adapter.h"

#include <cstdio>
#include <memory>

#include "adapters/gguf_lora.h"
#include "adapters/merge.h"
#include "cli/commands.h"
#include "model/config.h"
#include "model/gguf_llama.h"
#include "util/error.h"
#include "util/timer.h"

namespace flora::cli {

void add_init_adapter(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("init-adapter", "Write a new adapter (PEFT-style directory) shaped for a model");
  struct Options {
    std::string model, variant, targets, init = "lora", out;
    int64_t rank = 0;
    double alpha = 0;
    bool rslora = false;
    uint64_t seed = 0;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("-m,--model", o->model, "Model directory (its config.json gives the shapes)")->required();
  cmd->add_option("--variant", o->variant, "lora, pf-lora, lora-merged, ffa, ffba, ffba-aorb, ffba-qg, ffba-relu")
      ->required();
  cmd->add_option("--rank", o->rank, "Rank R (ffa stores matrices of rank 2R)")->required()->check(CLI::PositiveNumber);
  cmd->add_option("--alpha", o->alpha, "lora_alpha (default: 2 x the stored rank, so the scale s = alpha / r is 2)")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--rslora", o->rslora, "Scale by alpha / sqrt(r) (rsLoRA)");
  auto* targets_opt =
      cmd->add_option("--targets", o->targets, "Projections LoRA adapts (default all): q,k,v,o,gate,up,down");
  cmd->add_option("--init", o->init, "lora (PEFT: A Kaiming-uniform, B = C = 0), zero, or random (every matrix)")
      ->check(CLI::IsMember({"lora", "zero", "random"}))
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed of the random values")->capture_default_str();
  cmd->add_option("--out", o->out, "Output adapter directory")->required();
  cmd->callback([&action, o, targets_opt] {
    const bool targets_given = targets_opt->count() > 0;
    action = [o, targets_given] {
      const LlamaConfig model = load_model_config(o->model);
      std::array<bool, kTargets> targets{true, true, true, true, true, true, true};
      const bool lora_family = lora_execution_of(o->variant).has_value();
      if (targets_given) {
        if (!lora_family)
          fail("--targets applies to the LoRA variants only; the FLoRA preset '{}' has its own layout", o->variant);
        targets = parse_targets(o->targets);
      }
      AdapterConfig config = AdapterConfig::preset(o->variant, o->rank, o->alpha > 0 ? o->alpha : 1.0, targets);
      if (o->alpha <= 0) config.alpha = 2.0 * static_cast<double>(config.rank);
      config.use_rslora = o->rslora;
      config.init = o->init == "lora" ? AdapterInit::Lora : o->init == "zero" ? AdapterInit::Zero : AdapterInit::Random;
      const Adapter adapter = Adapter::create(config, model, o->seed);
      adapter.save(o->out);
      std::printf("init-adapter: %s, r = %lld, alpha = %g, scale %g, init %s -> %s\n", config.variant.c_str(),
                  static_cast<long long>(config.rank), config.alpha, config.scale(), o->init.c_str(), o->out.c_str());
      std::printf("trainable parameters: %lld (%.4f%% of the model's %lld), %zu bytes as f32\n",
                  static_cast<long long>(adapter.parameter_count()),
                  100.0 * static_cast<double>(adapter.parameter_count()) / static_cast<double>(model.parameter_count()),
                  static_cast<long long>(model.parameter_count()), adapter.bytes());
    };
  });
}

void add_export_lora(CLI::App& app, Action& action) {
  auto* cmd =
      app.add_subcommand("export-lora", "Write a LoRA adapter as llama.cpp's GGUF LoRA (llama-cli --lora FILE)");
  struct Options {
    std::string model, adapter, out;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("-m,--model", o->model, "Base model directory or .gguf file (the adapter's shapes)")->required();
  cmd->add_option("--adapter", o->adapter, "Adapter directory (LoRA)")->required();
  cmd->add_option("--out", o->out, "Output file (.gguf)")->required();
  cmd->callback([&action, o] {
    action = [o] {
      const LlamaConfig model = load_model_config(o->model);
      const Adapter adapter = Adapter::load(o->adapter, model);
      export_lora_gguf(adapter, model, o->out);
      std::fprintf(stderr, "export-lora: %s (r = %lld, alpha %g, %lld parameters) -> %s\n", o->adapter.c_str(),
                   static_cast<long long>(adapter.config.rank), adapter.config.alpha,
                   static_cast<long long>(adapter.parameter_count()), o->out.c_str());
    };
  });
}

void add_merge(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("merge", "Merge a LoRA adapter into a copy of the model (W + s B A)");
  struct Options {
    std::string model, adapter, out;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("-m,--model", o->model, "Base model directory")->required();
  cmd->add_option("--adapter", o->adapter, "Adapter directory")->required();
  cmd->add_option("--out", o->out, "Output model directory")->required();
  cmd->callback([&action, o] {
    action = [o] {
      const double t0 = now_seconds();
      const LlamaConfig model = LlamaConfig::from_file(o->model + "/config.json");
      const Adapter adapter = Adapter::load(o->adapter, model);
      merge_lora_into_model(o->model, adapter, o->out);
      std::fprintf(stderr, "merge: %s (r = %lld, scale %g, %lld parameters) into %s -> %s in %.1f s\n",
                   adapter.config.variant.c_str(), static_cast<long long>(adapter.config.rank), adapter.config.scale(),
                   static_cast<long long>(adapter.parameter_count()), o->model.c_str(), o->out.c_str(),
                   now_seconds() - t0);
    };
  });
}

}  // namespace flora::cli
