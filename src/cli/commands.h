// Each command of `flora` adds itself to the application here; main.cpp only
// wires them up and turns errors into messages.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace flora::cli {

// A command's work, run after parsing succeeded.
using Action = std::function<void()>;

void add_init_model(CLI::App& app, Action& action);
void add_generate(CLI::App& app, Action& action);
void add_logits(CLI::App& app, Action& action);
void add_tokenize(CLI::App& app, Action& action);
void add_bench(CLI::App& app, Action& action);
void add_score(CLI::App& app, Action& action);

void add_mmap_option(CLI::App* cmd, bool& mmap);

// "1,2,3" -> {1, 2, 3}; fails naming the flag and the bad item.
std::vector<int32_t> parse_token_list(const std::string& text, const char* flag);

}  // namespace flora::cli
