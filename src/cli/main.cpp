// flora <command>: the command-line front end. Errors from any layer arrive
// here as flora::Error and are printed once, with exit code 1.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli/commands.h"
#include "util/error.h"

int main(int argc, char** argv) {
  CLI::App app{"flora: Llama 3 inference and fine-tuning with fused FLoRA adapters"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Print the help of every command");
  flora::cli::Action action;
  flora::cli::add_init_model(app, action);
  flora::cli::add_generate(app, action);
  flora::cli::add_logits(app, action);
  flora::cli::add_tokenize(app, action);
  flora::cli::add_bench(app, action);
  flora::cli::add_cpu(app, action);
  flora::cli::add_score(app, action);
  flora::cli::add_eval(app, action);
  flora::cli::add_init_adapter(app, action);
  flora::cli::add_merge(app, action);
  flora::cli::add_export_lora(app, action);
  flora::cli::add_data(app, action);
  flora::cli::add_tokenizer(app, action);
  flora::cli::add_train(app, action);
  flora::cli::add_serve(app, action);
  flora::cli::add_quantize(app, action);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (action) action();
  } catch (const flora::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "flora: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "flora: unexpected error: %s\n", e.what());
    return 1;
  }
  return 0;
}
