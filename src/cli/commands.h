// Each command of `flora` adds itself to the application here; main.cpp only
// wires them up and turns errors into messages.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "adapters/exec.h"

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
void add_data(CLI::App& app, Action& action);
void add_tokenizer(CLI::App& app, Action& action);
void add_train(CLI::App& app, Action& action);

void add_mmap_option(CLI::App* cmd, bool& mmap);
// --adapter DIR and --lora-variant lora|pf-lora|lora-merged.
void add_adapter_options(CLI::App* cmd, std::string& adapter_dir, std::string& lora_variant);

// Loads DIR and attaches it to the model (nullptr when dir is empty). A LoRA
// adapter runs as lora_variant says; a FLoRA adapter as its configuration says.
std::unique_ptr<AttachedAdapter> attach_adapter(const LlamaModel& model, const std::string& dir,
                                                const std::string& lora_variant);

// "1,2,3" -> {1, 2, 3}; fails naming the flag and the bad item.
std::vector<int32_t> parse_token_list(const std::string& text, const char* flag);

}  // namespace flora::cli
