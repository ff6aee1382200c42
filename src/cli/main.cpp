// flora <command>: the command-line front end. Errors from any layer arrive
// here as flora::Error and are printed once, with exit code 1; a command line
// CLI11 refuses (an unknown flag, a value outside its set) exits 2, the usage
// error of getopt and argparse, instead of CLI11's own codes (105, 109, ...). Under mpirun
// (dist/dist.h) an error on any rank is printed with the rank and ends every
// rank of the job (MPI_Abort), so that none waits forever for it.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli/commands.h"
#include "dist/dist.h"
#include "util/error.h"

namespace {

// MPI ends with the process: after a parse error or help text as after a command.
struct DistSession {
  DistSession(int* argc, char*** argv) {
    try {
      flora::dist::init(argc, argv);
    } catch (const flora::Error& e) {
      flora::dist::abort(e.what(), 1);
    }
  }
  ~DistSession() { flora::dist::finalize(); }
};

}  // namespace

int main(int argc, char** argv) {
  const DistSession dist(&argc, &argv);
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
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);  // --help
    std::fprintf(stderr, "flora: error: %s\nRun with --help for more information.\n", e.what());
    return 2;
  }
  try {
    if (action) action();
  } catch (const flora::Error& e) {
    if (flora::dist::size() > 1) flora::dist::abort(e.what(), 1);
    std::fflush(stdout);
    std::fprintf(stderr, "flora: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    if (flora::dist::size() > 1) flora::dist::abort(std::string("unexpected error: ") + e.what(), 1);
    std::fflush(stdout);
    std::fprintf(stderr, "flora: unexpected error: %s\n", e.what());
    return 1;
  }
  return 0;
}
