// The options and helpers that several commands share: loading a model and an
// adapter the same way everywhere, and checking token counts before any sum.
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "model/weights.h"
#include "ops/ops.h"
#include "util/error.h"
#include "util/threads.h"

namespace flora::cli {

std::vector<int32_t> parse_token_list(const std::string& text, const char* flag) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find(',', pos);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(pos, end - pos);
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || item.empty() || v < 0 || v > INT32_MAX)
      fail("{}: item {} ('{}'): expected a non-negative integer token id", flag, ids.size() + 1, item);
    ids.push_back(static_cast<int32_t>(v));
    pos = end + 1;
  }
  return ids;
}

CLI::Validator token_count_check() {
  return CLI::Validator(
      [](const std::string& text) -> std::string {
        int64_t v = 0;
        const char* end = text.data() + text.size();
        const auto [ptr, ec] = std::from_chars(text.data(), end, v);
        if (ec == std::errc::result_out_of_range)
          return fmt::format("{} is more than the largest token count, {}", text, INT64_MAX);
        if (ec != std::errc() || ptr != end || v < 0)
          return fmt::format("expected a non-negative integer, found '{}'", text);
        return "";
      },
      "NONNEGATIVE INT64");
}

void check_fits_context(const LlamaModel& model, const std::string& what, int64_t tokens) {
  const int64_t context = model.config().max_position_embeddings;
  if (tokens > context)
    fail("{} is {} tokens: expected at most the model's context, {} (max_position_embeddings in {}/config.json)", what,
         tokens, context, model.dir());
}

void add_model_load_options(CLI::App* cmd, ModelLoadOptions& options) {
  cmd->add_flag("--mmap", options.mmap,
                "Read the weights in place from the memory-mapped files instead of copying them into "
                "huge-page memory (instant load; decode stalls more often)");
  cmd->add_flag("--allow-nonfinite", options.allow_nonfinite,
                "Load a model whose weights hold NaN or Inf (refused by default: its logits are NaN) and report "
                "the first one");
  add_products_option(cmd);
}

void add_products_option(CLI::App* cmd) {
  cmd->add_option_function<std::string>(
         "--products",
         [](const std::string& v) {
           ops::set_bf16_products(v == "bf16");
           if (v == "bf16" && !ops::bf16_products_active(DType::BF16))
             std::fprintf(stderr,
                          "flora: warning: --products bf16: this CPU has no AVX512_BF16 dot product (or FLORA_CPU "
                          "caps it below AVX-512): the products stay f32\n");
         },
         "Products of BF16 weights: f32 (activations as computed) or bf16 (activations rounded to bf16 for "
         "AVX512_BF16's dot product: 1.6x the prefill speed of f32 at the 1B shapes; the rounding moves the "
         "logits, by up to 5e-2 on the tests' tiny model; docs/benchmarks.md)")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->default_str("f32");
}

std::unique_ptr<LlamaModel> load_model(const std::string& dir, const ModelLoadOptions& options) {
  auto model = LlamaModel::load(dir, options);
  if (!model->nonfinite_report().empty())
    std::fprintf(stderr, "flora: warning: %s\n", model->nonfinite_report().c_str());
  return model;
}

void add_threads_option(CLI::App* cmd, int& threads) {
  threads = default_thread_count();
  cmd->add_option("-t,--threads", threads, "Threads (default: the machine's cores)")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
}

void add_adapter_options(CLI::App* cmd, std::string& adapter_dir, std::string& lora_variant) {
  cmd->add_option("--adapter", adapter_dir,
                  "Adapter directory (PEFT LoRA or FLoRA: adapter_config.json + adapter_model.safetensors), or "
                  "llama.cpp's GGUF LoRA file")
      ->check(CLI::ExistingPath);
  lora_variant = "lora";
  cmd->add_option("--lora-variant", lora_variant,
                  "How a LoRA adapter runs: lora (unfused, as PEFT), pf-lora (A rows fused), lora-merged")
      ->check(CLI::IsMember({"lora", "pf-lora", "lora-merged"}))
      ->capture_default_str();
}

std::unique_ptr<AttachedAdapter> attach_adapter(const LlamaModel& model, const std::string& dir,
                                                const std::string& lora_variant) {
  if (dir.empty()) return nullptr;
  const auto execution = lora_execution_of(lora_variant);
  if (!execution) fail("--lora-variant: expected lora, pf-lora or lora-merged, found '{}'", lora_variant);
  Adapter adapter = Adapter::load(dir, model.config());
  auto attached = std::make_unique<AttachedAdapter>(model, std::move(adapter), *execution);
  std::fprintf(stderr, "adapter: %s (%s, rank %lld, %lld parameters)\n", dir.c_str(), attached->variant().c_str(),
               static_cast<long long>(attached->adapter().config.rank),
               static_cast<long long>(attached->adapter().parameter_count()));
  return attached;
}

}  // namespace flora::cli
