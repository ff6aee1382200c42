// flora score: metrics of generated answers, without a model. Reads JSONL
// predictions (see eval/score.h), prints a markdown table, and with --out
// writes DIR/results.json and DIR/examples.jsonl.
#include "eval/score.h"

#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "util/file.h"

namespace flora::cli {

void add_score(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("score", "Score JSONL predictions: mcq or math accuracy, or ROUGE-1/2/L");
  struct Options {
    std::string task, predictions, out;
    bool skip_bad = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--task", o->task, "Task kind")->required()->check(CLI::IsMember({"mcq", "math", "rouge"}));
  cmd->add_option("--predictions", o->predictions,
                  "JSONL file: one {\"prediction\", \"reference\"} (or \"answer\", optional \"choices\") per line")
      ->required();
  cmd->add_option("--out", o->out, "Directory for results.json and examples.jsonl");
  cmd->add_flag("--skip-bad", o->skip_bad, "Skip (and count) malformed lines instead of failing");
  cmd->callback([&action, o] {
    action = [o] {
      using namespace flora::eval;
      const ScoreResult r = score_jsonl(o->predictions, parse_task(o->task), o->skip_bad);
      for (const auto& m : r.skip_messages) std::fprintf(stderr, "flora score: skipped %s\n", m.c_str());
      std::string header = "| task | examples | skipped |", rule = "| --- | ---: | ---: |";
      std::string row = fmt::format("| {} | {} | {} |", task_name(r.task), r.count, r.skipped);
      for (const auto& [name, value] : r.metrics) {
        header += fmt::format(" {} |", name);
        rule += " ---: |";
        row += fmt::format(" {:.4f} |", value);
      }
      std::printf("%s\n%s\n%s\n", header.c_str(), rule.c_str(), row.c_str());
      if (!o->out.empty()) {
        make_directories(o->out);
        Json summary = r.to_json();
        summary["predictions"] = o->predictions;
        summary["skip_messages"] = r.skip_messages;
        write_file_atomic(o->out + "/results.json", summary.dump(2) + "\n");
        write_file_atomic(o->out + "/examples.jsonl", [&r](std::FILE* f) {
          for (size_t i = 0; i < r.examples.size(); ++i) {
            const std::string line = r.example_json(i).dump() + "\n";
            std::fwrite(line.data(), 1, line.size(), f);
          }
        });
        std::fprintf(stderr, "flora score: wrote %s/results.json and %s/examples.jsonl\n", o->out.c_str(),
                     o->out.c_str());
      }
    };
  });
}

}  // namespace flora::cli
