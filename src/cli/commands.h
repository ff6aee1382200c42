// Each command of `flora` adds itself to the application here; main.cpp only
// wires them up and turns errors into messages.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "adapters/exec.h"
#include "model/weights.h"

namespace flora::cli {

// A command's work, run after parsing succeeded.
using Action = std::function<void()>;

void add_init_model(CLI::App& app, Action& action);
void add_generate(CLI::App& app, Action& action);
void add_logits(CLI::App& app, Action& action);
void add_tokenize(CLI::App& app, Action& action);
void add_bench(CLI::App& app, Action& action);
void add_cpu(CLI::App& app, Action& action);
void add_score(CLI::App& app, Action& action);
void add_eval(CLI::App& app, Action& action);
void add_init_adapter(CLI::App& app, Action& action);
void add_merge(CLI::App& app, Action& action);
void add_export_lora(CLI::App& app, Action& action);
void add_data(CLI::App& app, Action& action);
void add_tokenizer(CLI::App& app, Action& action);
void add_train(CLI::App& app, Action& action);
void add_serve(CLI::App& app, Action& action);
void add_quantize(CLI::App& app, Action& action);

// Shared by the commands (cli/options.cpp).
//
// The options of every command that loads a model, added in this one place:
// --mmap and --allow-nonfinite (model/weights.h, ModelLoadOptions).
void add_model_load_options(CLI::App* cmd, ModelLoadOptions& options);
// --products f32|bf16: the precision of the BF16 weights' products
// (ops::set_bf16_products), process-wide; part of add_model_load_options.
void add_products_option(CLI::App* cmd);
// LlamaModel::load, then the report of non-finite weights (if allowed and any)
// printed once on stderr.
std::unique_ptr<LlamaModel> load_model(const std::string& dir, const ModelLoadOptions& options);
// -t,--threads N in [1, 1024], by default the machine's cores.
void add_threads_option(CLI::App* cmd, int& threads);
// --adapter DIR and --lora-variant lora|pf-lora|lora-merged.
void add_adapter_options(CLI::App* cmd, std::string& adapter_dir, std::string& lora_variant);

// Loads DIR and attaches it to the model (nullptr when dir is empty). A LoRA
// adapter runs as lora_variant says; a FLoRA adapter as its configuration says.
std::unique_ptr<AttachedAdapter> attach_adapter(const LlamaModel& model, const std::string& dir,
                                                const std::string& lora_variant);

// For a token-count flag (-n, -p, --max-new-tokens, ...): a non-negative
// integer that int64 holds. CLI11 alone would clamp 2^63 and above to INT64_MAX
// without a word (strtoll), so the text is checked before conversion.
CLI::Validator token_count_check();

// Refuses a token count (a flag's value, or a sum of them) that does not fit
// the model's context (max_position_embeddings): fails naming `what`, the count
// and the context. Callers check each flag alone before adding two, so no sum
// can overflow.
void check_fits_context(const LlamaModel& model, const std::string& what, int64_t tokens);

// "1,2,3" -> {1, 2, 3}; fails naming the flag and the bad item.
std::vector<int32_t> parse_token_list(const std::string& text, const char* flag);

}  // namespace flora::cli
