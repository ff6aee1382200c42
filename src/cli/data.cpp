// flora data synth: the seeded synthetic corpus and task data (src/synth/).
#include <cstdio>

#include "cli/commands.h"
#include "synth/synth.h"
#include "util/error.h"
#include "util/timer.h"

namespace flora::cli {

void add_data(CLI::App& app, Action& action) {
  auto* data = app.add_subcommand("data", "Make data sets");
  data->require_subcommand(1);
  auto* cmd = data->add_subcommand(
      "synth", "Write the synthetic world's pretraining corpus and its mcq, math and summary tasks (train/valid/test)");
  struct Options {
    std::string out, scale = "small";
    uint64_t seed = 0;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--out", o->out, "Output directory (created; the files in it are replaced)")->required();
  cmd->add_option("--seed", o->seed, "Seed of the world and of every item")->capture_default_str();
  // Checked in the action, so that a bad value is a flora error (exit 1) naming the flag.
  cmd->add_option("--scale", o->scale, "small (about 1.5 MB of corpus, 2000/200/200 records per task) or full")
      ->capture_default_str();
  cmd->callback([&action, o] {
    action = [o] {
      const synth::Scale scale = synth::scale_named(o->scale, "--scale");
      const double t0 = now_seconds();
      const synth::SynthData d = synth::make_synth(o->seed, scale);
      const std::vector<synth::SynthFile> files = d.files();
      const double t1 = now_seconds();
      try {
        synth::write_synth(files, o->out);
      } catch (const Error& e) {
        fail("--out {}: {}", o->out, e.what());
      }
      std::printf("| file | records | bytes |\n| --- | ---: | ---: |\n");
      for (const auto& f : files) std::printf("| %s | %zu | %zu |\n", f.path.c_str(), f.records, f.contents.size());
      std::fprintf(stderr, "data synth: seed %llu, scale %s -> %s: generated in %.2f s, written in %.2f s\n",
                   static_cast<unsigned long long>(o->seed), scale.name.c_str(), o->out.c_str(), t1 - t0,
                   now_seconds() - t1);
    };
  });
}

}  // namespace flora::cli
