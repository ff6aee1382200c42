// Scoring generated answers without a model: JSONL predictions in, metrics and
// per-example verdicts out. Behind `flora score`.
//
// Records (one JSON object per line; blank lines are ignored):
//   every task: {"prediction": TEXT, "reference": TEXT}
//   math:  "reference" may be a JSON number, a number as text, or GSM8K text
//          ("... #### 42"); or {"prediction", "answer"} with a GSM8K answer
//   mcq:   {"prediction", "answer"} also works; the answer is "option2",
//          "answer3", "solution1", "ending4", "true"/"false" or a letter "B";
//          an optional "choices" list of strings sets the number of options
//          (and lets the reference or the prediction give a choice's text)
// "reference" is used when both it and "answer" are present.
#pragma once
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "eval/rouge.h"
#include "util/json.h"

namespace flora::eval {

enum class Task { Mcq, Math, Rouge };

// "mcq" | "math" | "rouge"; fails otherwise.
Task parse_task(const std::string& name);
std::string task_name(Task task);

struct Example {
  std::string prediction;
  std::string reference;  // a number's JSON text for a numeric math reference
  std::vector<std::string> choices;
};

struct Verdict {
  std::string prediction, reference;
  std::string extracted;  // mcq/math: the answer found in the prediction ("" when none)
  std::string expected;   // mcq/math: the reference answer, normalised ("option2", "1234")
  bool parsed = true;     // mcq/math: an answer was found in the prediction
  bool correct = false;   // mcq/math
  RougeScores rouge;      // rouge
  size_t line = 0;        // score_jsonl: the line of the file (1-based)
};

struct ScoreResult {
  Task task = Task::Mcq;
  size_t count = 0;                         // examples scored
  size_t skipped = 0;                       // bad lines skipped (with skip_bad)
  std::vector<std::string> skip_messages;   // why each was skipped: "FILE:LINE: expected ..."
  // mcq: accuracy, unparseable (shares of count); math: accuracy, unparseable;
  // rouge: rouge1, rouge2, rougeL (means of per-example F1).
  std::vector<std::pair<std::string, double>> metrics;
  std::vector<Verdict> examples;

  double metric(const std::string& name) const;  // fails if absent
  Json to_json() const;                          // task, count, skipped, metrics
  Json example_json(size_t i) const;             // one line of examples.jsonl
};

// One example's verdict. Throws flora::Error("... expected ...") when the
// reference cannot be understood (no file or line in the message).
Verdict score_example(Task task, const Example& example);

// Verdicts and metrics of in-memory examples; errors name "example N".
ScoreResult score_examples(Task task, const std::vector<Example>& examples);

// The example of one parsed JSONL record; errors have no FILE:LINE prefix.
Example example_from_json(Task task, const Json& record);

// Reads and scores a JSONL file. Errors read "FILE:LINE: expected ..."; with
// skip_bad a bad line is counted in `skipped` (and its message kept) instead.
// Fails on an empty file, and when no line could be scored.
ScoreResult score_jsonl(const std::string& path, Task task, bool skip_bad);

}  // namespace flora::eval
