// flora <command>: the command-line front end. Errors from any layer arrive
// here as flora::Error and are printed once, with exit code 1.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "util/error.h"

int main(int argc, char** argv) {
  CLI::App app{"flora: Llama inference and fine-tuning with fused FLoRA adapters"};
  app.require_subcommand(1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const flora::Error& e) {
    std::fprintf(stderr, "flora: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
