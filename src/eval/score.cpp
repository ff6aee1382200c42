#include "eval/score.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "eval/answers.h"
#include "util/error.h"
#include "util/file.h"

namespace flora::eval {

namespace {

std::string number_text(double v) {
  if (std::fabs(v) < 1e15 && v == std::floor(v)) return fmt::format("{}", static_cast<long long>(v));
  return fmt::format("{}", v);
}

// A math reference: GSM8K text, or a number as text.
double math_reference(const std::string& reference) {
  if (reference.find("####") != std::string::npos) {
    auto v = parse_gsm8k_answer(reference);
    if (!v) fail("reference '{}': expected a number after '####'", reference);
    return *v;
  }
  std::string cleaned;
  for (char c : reference)
    if (c != ',' && c != '$' && c != ' ' && c != '\t' && c != '\n' && c != '\r') cleaned.push_back(c);
  char* end = nullptr;
  const double v = cleaned.empty() ? 0.0 : std::strtod(cleaned.c_str(), &end);
  if (cleaned.empty() || end != cleaned.c_str() + cleaned.size() || !std::isfinite(v))
    fail("reference '{}': expected a number, or a GSM8K answer ending in '#### NUMBER'", reference);
  return v;
}

}  // namespace

Task parse_task(const std::string& name) {
  if (name == "mcq") return Task::Mcq;
  if (name == "math") return Task::Math;
  if (name == "rouge") return Task::Rouge;
  fail("task '{}': expected mcq, math or rouge", name);
}

std::string task_name(Task task) {
  switch (task) {
    case Task::Mcq: return "mcq";
    case Task::Math: return "math";
    case Task::Rouge: return "rouge";
  }
  return "?";
}

Verdict score_example(Task task, const Example& ex) {
  Verdict v;
  v.prediction = ex.prediction;
  v.reference = ex.reference;
  switch (task) {
    case Task::Rouge:
      v.rouge = rouge(ex.prediction, ex.reference);
      break;
    case Task::Math: {
      const double want = math_reference(ex.reference);
      v.expected = number_text(want);
      const auto got = extract_last_number(ex.prediction);
      v.parsed = got.has_value();
      if (got) {
        v.extracted = number_text(*got);
        v.correct = numbers_match(*got, want);
      }
      break;
    }
    case Task::Mcq: {
      const auto key = parse_mcq_reference(ex.reference, ex.choices);
      if (!key)
        fail("reference '{}': expected option1.., answer1.., solution1/2, ending1.., true, false, a letter A-Z{}",
             ex.reference, ex.choices.empty() ? "" : " or the text of a choice");
      int n = ex.choices.empty() ? std::max(default_option_count(key->form), key->index + 1)
                                 : static_cast<int>(ex.choices.size());
      if (key->form == McqForm::TrueFalse) n = 2;
      if (key->index >= n)
        fail("reference '{}': expected one of {} options (the choices list has {})", ex.reference, n,
             ex.choices.size());
      v.expected = mcq_key_text(*key);
      const auto got = extract_mcq_answer(ex.prediction, key->form, n, ex.choices);
      v.parsed = got.has_value();
      if (got) {
        v.extracted = mcq_key_text(*got);
        v.correct = *got == *key;
      }
      break;
    }
  }
  return v;
}

namespace {

void finish(ScoreResult& r) {
  r.count = r.examples.size();
  r.metrics.clear();
  const double n = static_cast<double>(std::max<size_t>(r.count, 1));
  if (r.task == Task::Rouge) {
    double r1 = 0, r2 = 0, rl = 0;
    for (const auto& e : r.examples) {
      r1 += e.rouge.rouge1.f1;
      r2 += e.rouge.rouge2.f1;
      rl += e.rouge.rougeL.f1;
    }
    r.metrics = {{"rouge1", r1 / n}, {"rouge2", r2 / n}, {"rougeL", rl / n}};
  } else {
    size_t correct = 0, unparsed = 0;
    for (const auto& e : r.examples) {
      correct += e.correct;
      unparsed += !e.parsed;
    }
    r.metrics = {{"accuracy", correct / n}, {"unparseable", unparsed / n}};
  }
}

}  // namespace

ScoreResult score_examples(Task task, const std::vector<Example>& examples) {
  ScoreResult r;
  r.task = task;
  for (size_t i = 0; i < examples.size(); ++i) {
    try {
      r.examples.push_back(score_example(task, examples[i]));
    } catch (const Error& e) {
      fail("example {}: {}", i + 1, e.what());
    }
  }
  finish(r);
  return r;
}

Example example_from_json(Task task, const Json& rec) {
  if (!rec.is_object()) fail("expected a JSON object, found {}", json_preview(rec));
  Example ex;
  auto p = rec.find("prediction");
  if (p == rec.end()) fail("expected key 'prediction' (a string)");
  if (!p->is_string()) fail("key 'prediction': expected a string, found {}", json_preview(*p));
  ex.prediction = p->get<std::string>();
  const char* key = rec.contains("reference") ? "reference" : "answer";
  auto r = rec.find(key);
  if (r == rec.end())
    fail("expected key 'reference'{} (a string{})", task == Task::Rouge ? "" : " or 'answer'",
         task == Task::Math ? " or a number" : "");
  if (r->is_string()) {
    ex.reference = r->get<std::string>();
  } else if (task == Task::Math && r->is_number()) {
    ex.reference = r->dump();
  } else {
    fail("key '{}': expected a string{}, found {}", key, task == Task::Math ? " or a number" : "", json_preview(*r));
  }
  if (auto c = rec.find("choices"); c != rec.end() && !c->is_null() && task == Task::Mcq) {
    if (!c->is_array()) fail("key 'choices': expected a list of strings, found {}", json_preview(*c));
    for (const auto& item : *c) {
      if (!item.is_string())
        fail("key 'choices': item {}: expected a string, found {}", ex.choices.size() + 1, json_preview(item));
      ex.choices.push_back(item.get<std::string>());
    }
  }
  return ex;
}

ScoreResult score_jsonl(const std::string& path, Task task, bool skip_bad) {
  const std::string text = read_file(path);
  ScoreResult r;
  r.task = task;
  size_t line_no = 0, records = 0, pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r\f\v") == std::string::npos) continue;
    ++records;
    try {
      Json rec;
      try {
        rec = Json::parse(line);
      } catch (const nlohmann::json::parse_error& e) {
        fail("expected one JSON object per line, found invalid JSON at byte {}", e.byte);
      }
      r.examples.push_back(score_example(task, example_from_json(task, rec)));
      r.examples.back().line = line_no;
    } catch (const Error& e) {
      const std::string message = fmt::format("{}:{}: {}", path, line_no, e.what());
      if (!skip_bad) throw Error(message);
      ++r.skipped;
      r.skip_messages.push_back(message);
    }
  }
  if (records == 0) fail("{}: expected JSON lines with a prediction and a reference, found an empty file", path);
  if (r.examples.empty())
    fail("{}: expected at least one valid line, found none ({} skipped; the first: {})", path, r.skipped,
         r.skip_messages.front());
  finish(r);
  return r;
}

double ScoreResult::metric(const std::string& name) const {
  for (const auto& [k, v] : metrics)
    if (k == name) return v;
  fail("no metric '{}' for task {}", name, task_name(task));
}

Json ScoreResult::to_json() const {
  Json j;
  j["task"] = task_name(task);
  j["count"] = count;
  j["skipped"] = skipped;
  Json m = Json::object();
  for (const auto& [k, v] : metrics) m[k] = v;
  j["metrics"] = m;
  return j;
}

Json ScoreResult::example_json(size_t i) const {
  FLORA_ASSERT(i < examples.size());
  const Verdict& e = examples[i];
  Json j;
  j["index"] = i;
  if (e.line > 0) j["line"] = e.line;
  j["prediction"] = e.prediction;
  j["reference"] = e.reference;
  if (task == Task::Rouge) {
    auto one = [](const RougeScore& s) { return Json{{"precision", s.precision}, {"recall", s.recall}, {"f1", s.f1}}; };
    j["rouge1"] = one(e.rouge.rouge1);
    j["rouge2"] = one(e.rouge.rouge2);
    j["rougeL"] = one(e.rouge.rougeL);
  } else {
    j["expected"] = e.expected;
    j["extracted"] = e.parsed ? Json(e.extracted) : Json(nullptr);
    j["verdict"] = !e.parsed ? "unparseable" : e.correct ? "correct" : "wrong";
  }
  return j;
}

}  // namespace flora::eval
