#include "eval/tasks.h"

#include <fmt/format.h>

#include <algorithm>
#include <functional>
#include <initializer_list>

#include "eval/answers.h"
#include "tokenizer/chat_template.h"
#include "util/error.h"
#include "util/file.h"

namespace flora::eval {

namespace {

std::string trim(const std::string& s) {
  const char* ws = " \t\r\n\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

std::string join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + items[i];
  return out;
}

// Fails on a key outside `allowed`, naming the form.
void check_keys(const Json& rec, std::initializer_list<const char*> allowed, const char* form) {
  for (const auto& item : rec.items()) {
    const std::string& key = item.key();  // not a structured binding: clang 14 cannot capture one
    if (std::find_if(allowed.begin(), allowed.end(), [&](const char* a) { return key == a; }) != allowed.end())
      continue;
    std::vector<std::string> names(allowed.begin(), allowed.end());
    fail("unknown key '{}': expected only the keys {} of {}", key, join(names, ", "), form);
  }
}

std::string get_string(const Json& rec, const char* key, bool required) {
  auto it = rec.find(key);
  if (it == rec.end() || (it->is_null() && !required)) {
    if (required) fail("expected key '{}' (a string)", key);
    return "";
  }
  if (!it->is_string()) fail("key '{}': expected a string, found {}", key, json_preview(*it));
  return it->get<std::string>();
}

// A reference answer given as a string, or (where numbers are allowed) a number.
std::string get_answer(const Json& rec, const char* key, bool number_ok) {
  auto it = rec.find(key);
  if (it == rec.end()) fail("expected key '{}' (a string{})", key, number_ok ? " or a number" : "");
  if (it->is_string()) return it->get<std::string>();
  if (number_ok && it->is_number()) return it->dump();
  fail("key '{}': expected a string{}, found {}", key, number_ok ? " or a number" : "", json_preview(*it));
}

// Checks a reference as `flora score` will read it (its error names the key).
void check_reference(Task task, const std::string& reference, const std::vector<std::string>& choices,
                     const char* key) {
  try {
    score_example(task, Example{"", reference, choices});
  } catch (const Error& e) {
    fail("key '{}': {}", key, e.what());
  }
}

// The option words of an instruction's "Answer format: a/b/c" line, when it
// has one whose words all parse in `form` (else empty).
std::vector<std::string> answer_format_labels(const std::string& instruction, McqForm form) {
  const std::string marker = "Answer format:";
  const size_t at = instruction.rfind(marker);
  if (at == std::string::npos) return {};
  size_t end = instruction.find('\n', at);
  if (end == std::string::npos) end = instruction.size();
  const std::string list = instruction.substr(at + marker.size(), end - at - marker.size());
  std::vector<std::string> labels;
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t slash = list.find('/', pos);
    if (slash == std::string::npos) slash = list.size();
    const std::string word = trim(list.substr(pos, slash - pos));
    const auto key = parse_mcq_reference(word, {});
    if (!key || key->form != form || key->index != static_cast<int>(labels.size())) return {};
    labels.push_back(word);
    pos = slash + 1;
  }
  return labels.size() >= 2 ? labels : std::vector<std::string>{};
}

std::vector<std::string> default_labels(McqForm form) {
  std::vector<std::string> labels;
  for (int i = 0; i < default_option_count(form); ++i) labels.push_back(mcq_key_text(McqKey{form, i}));
  return labels;
}

void parse_llm_adapters_mcq(const Json& rec, EvalRecord& r) {
  const std::string answer = trim(get_answer(rec, "answer", false));
  const auto key = parse_mcq_reference(answer, {});
  if (!key)
    fail("key 'answer': expected option1.., answer1.., solution1/2, ending1.., true, false or a letter A-Z, found '{}'",
         answer);
  check_reference(Task::Mcq, answer, {}, "answer");
  r.reference = answer;
  r.labels = answer_format_labels(r.instruction, key->form);
  if (r.labels.empty()) r.labels = default_labels(key->form);
  if (key->index >= static_cast<int>(r.labels.size()))
    fail("key 'answer': '{}' is not among the options {}", answer, join(r.labels, "/"));
  // The answer the model was trained to write: LLM-Adapters' output ends with the answer word.
  const std::string output = trim(get_string(rec, "output", false));
  if (output.size() > answer.size() && output.compare(output.size() - answer.size(), answer.size(), answer) == 0)
    r.continuation_prefix = output.substr(0, output.size() - answer.size());
  else
    r.continuation_prefix = "the correct answer is ";
}

void parse_plain_mcq(const Json& rec, EvalRecord& r) {
  check_keys(rec, {"question", "choices", "answer", "id"}, "a plain multiple-choice record");
  const std::string question = get_string(rec, "question", true);
  auto c = rec.find("choices");
  if (c == rec.end()) fail("expected key 'choices' (a list of at least 2 strings)");
  if (!c->is_array() || c->size() < 2 || c->size() > 26)
    fail("key 'choices': expected a list of 2 to 26 strings, found {}", json_preview(*c));
  for (const auto& item : *c) {
    if (!item.is_string() || trim(item.get<std::string>()).empty())
      fail("key 'choices': item {}: expected a non-empty string, found {}", r.choices.size() + 1, json_preview(item));
    r.choices.push_back(item.get<std::string>());
  }
  const int n = static_cast<int>(r.choices.size());
  auto a = rec.find("answer");
  if (a == rec.end()) fail("expected key 'answer' (a choice's index from 0, its text, a letter or answer1..)");
  int index = -1;
  if (a->is_number_integer()) {
    const int64_t v = a->get<int64_t>();
    if (v < 0 || v >= n) fail("key 'answer': expected a choice's index, 0 to {}, found {}", n - 1, json_preview(*a));
    index = static_cast<int>(v);
  } else if (a->is_string()) {
    const std::string text = trim(a->get<std::string>());
    for (int i = 0; i < n && index < 0; ++i)
      if (trim(r.choices[i]) == text) index = i;
    if (index < 0) {
      const auto key = parse_mcq_reference(text, {});
      if (!key)
        fail("key 'answer': expected a choice's index from 0, its text, a letter or answer1.., found {}", json_preview(*a));
      if (key->index >= n) fail("key 'answer': {} is beyond the {} choices", json_preview(*a), n);
      index = key->index;
    }
  } else {
    fail("key 'answer': expected a choice's index from 0, its text, a letter or answer1.., found {}", json_preview(*a));
  }
  r.instruction = plain_mcq_instruction(question, r.choices);
  r.reference = mcq_key_text(McqKey{McqForm::Answer, index});
  for (int i = 0; i < n; ++i) r.labels.push_back(mcq_key_text(McqKey{McqForm::Answer, i}));
  r.continuation_prefix = "the correct answer is ";
}

// Record boundaries of a JSON array: the line where each element starts.
// `text` is known to parse as an array.
std::vector<size_t> array_element_lines(const std::string& text) {
  std::vector<size_t> lines;
  size_t line = 1, i = 0;
  while (i < text.size() && text[i] != '[') line += text[i++] == '\n';
  int depth = 0;
  bool in_string = false, expect = true;
  for (++i; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\n') ++line;
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
    if (depth == 0 && c == ']') break;
    if (depth == 0 && c == ',') {
      expect = true;
      continue;
    }
    if (depth == 0 && expect) {
      lines.push_back(line);
      expect = false;
    }
    if (c == '"')
      in_string = true;
    else if (c == '{' || c == '[')
      ++depth;
    else if (c == '}' || c == ']')
      --depth;
  }
  return lines;
}

bool is_records_file(const std::string& path) {
  auto ends_with = [&](const char* ext) {
    const std::string e(ext);
    return path.size() >= e.size() && path.compare(path.size() - e.size(), e.size(), e) == 0;
  };
  return ends_with(".jsonl") || ends_with(".json");
}

}  // namespace

EvalTask parse_eval_task(const std::string& name) {
  if (name == "mcq") return EvalTask::Mcq;
  if (name == "math") return EvalTask::Math;
  if (name == "rouge") return EvalTask::Rouge;
  if (name == "ppl") return EvalTask::Ppl;
  fail("task '{}': expected mcq, math, rouge or ppl", name);
}

std::string eval_task_name(EvalTask task) {
  switch (task) {
    case EvalTask::Mcq:
      return "mcq";
    case EvalTask::Math:
      return "math";
    case EvalTask::Rouge:
      return "rouge";
    case EvalTask::Ppl:
      return "ppl";
  }
  return "?";
}

Task score_task(EvalTask task) {
  switch (task) {
    case EvalTask::Mcq:
      return Task::Mcq;
    case EvalTask::Math:
      return Task::Math;
    case EvalTask::Rouge:
      return Task::Rouge;
    case EvalTask::Ppl:
      break;
  }
  fail("task ppl has no answers to score");
}

int64_t default_max_new_tokens(EvalTask task) {
  switch (task) {
    case EvalTask::Mcq:
      return 32;
    case EvalTask::Math:
      return 256;
    case EvalTask::Rouge:
      return 128;
    case EvalTask::Ppl:
      return 0;
  }
  return 0;
}

const char* record_form_name(RecordForm form) {
  switch (form) {
    case RecordForm::LlmAdapters:
      return "llm-adapters";
    case RecordForm::PlainMcq:
      return "plain-mcq";
    case RecordForm::Gsm8k:
      return "gsm8k";
    case RecordForm::Dialogue:
      return "dialogue";
    case RecordForm::Document:
      return "document";
    case RecordForm::Text:
      return "text";
  }
  return "?";
}

std::string plain_mcq_instruction(const std::string& question, const std::vector<std::string>& choices) {
  std::string listed, format;
  for (size_t i = 0; i < choices.size(); ++i) {
    listed += fmt::format("{}Answer{}: {}", i ? " " : "", i + 1, choices[i]);
    format += fmt::format("{}answer{}", i ? "/" : "", i + 1);
  }
  return question + "\n" + listed + "\n\nAnswer format: " + format;
}

EvalRecord record_from_json(EvalTask task, const Json& rec) {
  if (!rec.is_object()) fail("expected a JSON object, found {}", json_preview(rec));
  EvalRecord r;
  if (auto id = rec.find("id"); id != rec.end()) {
    if (!id->is_string() && !id->is_number_integer() && !id->is_null())
      fail("key 'id': expected a string or an integer, found {}", json_preview(*id));
    r.id = *id;
  }
  std::vector<std::string> keys;
  for (const auto& [key, value] : rec.items()) keys.push_back(key);
  const std::string found = keys.empty() ? "no keys" : "keys " + join(keys, ", ");
  switch (task) {
    case EvalTask::Mcq:
    case EvalTask::Math: {
      if (rec.contains("instruction")) {
        check_keys(rec, {"instruction", "input", "output", "answer", "id"}, "an LLM-Adapters record");
        r.form = RecordForm::LlmAdapters;
        r.instruction = get_string(rec, "instruction", true);
        r.input = get_string(rec, "input", false);
        get_string(rec, "output", false);  // checks its type; the gold output is not used otherwise
        if (task == EvalTask::Mcq) {
          parse_llm_adapters_mcq(rec, r);
        } else {
          r.reference = get_answer(rec, "answer", true);
          check_reference(Task::Math, r.reference, {}, "answer");
        }
      } else if (rec.contains("question") && task == EvalTask::Mcq) {
        r.form = RecordForm::PlainMcq;
        parse_plain_mcq(rec, r);
      } else if (rec.contains("question")) {
        check_keys(rec, {"question", "answer", "id"}, "a GSM8K record");
        r.form = RecordForm::Gsm8k;
        r.instruction = get_string(rec, "question", true);
        r.reference = get_answer(rec, "answer", true);
        check_reference(Task::Math, r.reference, {}, "answer");
      } else if (task == EvalTask::Mcq) {
        fail(
            "expected an LLM-Adapters record {{instruction, input, output, answer}} or a plain record {{question, "
            "choices, answer}}, found {}",
            found);
      } else {
        fail(
            "expected an LLM-Adapters record {{instruction, input, output, answer}} or a GSM8K record {{question, "
            "answer}}, found {}",
            found);
      }
      break;
    }
    case EvalTask::Rouge: {
      const bool dialogue = rec.contains("dialogue"), document = rec.contains("document");
      if (dialogue == document)
        fail("expected a record {{dialogue, summary}} or {{document, summary}}, found {}", found);
      check_keys(rec, {dialogue ? "dialogue" : "document", "summary", "id"},
                 dialogue ? "a dialogue record" : "a document record");
      r.form = dialogue ? RecordForm::Dialogue : RecordForm::Document;
      r.instruction = dialogue ? kSummarizeDialogueInstruction : kSummarizeDocumentInstruction;
      r.input = get_string(rec, dialogue ? "dialogue" : "document", true);
      if (trim(r.input).empty())
        fail("key '{}': expected text, found an empty string", dialogue ? "dialogue" : "document");
      r.reference = get_string(rec, "summary", true);
      break;
    }
    case EvalTask::Ppl: {
      check_keys(rec, {"text", "id"}, "a text record");
      r.form = RecordForm::Text;
      r.text = get_string(rec, "text", true);
      if (r.text.empty()) fail("key 'text': expected text, found an empty string");
      break;
    }
  }
  return r;
}

RecordSet read_records(const std::string& path, EvalTask task, bool skip_bad, size_t limit) {
  const std::string text = read_file(path);
  RecordSet set;
  set.path = path;
  if (task == EvalTask::Ppl && !is_records_file(path)) {
    if (text.empty()) fail("{}: expected text, found an empty file", path);
    EvalRecord r;
    r.line = 1;
    r.form = RecordForm::Text;
    r.text = text;
    set.records.push_back(std::move(r));
    return set;
  }
  auto add = [&](size_t line, const std::function<Json()>& parse) {
    try {
      EvalRecord r = record_from_json(task, parse());
      r.line = line;
      set.records.push_back(std::move(r));
    } catch (const Error& e) {
      const std::string message = fmt::format("{}:{}: {}", path, line, e.what());
      if (!skip_bad) throw Error(message);
      ++set.skipped;
      set.skip_messages.push_back(message);
    }
  };
  auto full = [&] { return limit > 0 && set.records.size() >= limit; };
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) fail("{}: expected JSON records, found an empty file", path);
  size_t records = 0;
  if (text[first] == '[') {  // one JSON array of records
    Json all;
    try {
      all = Json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
      const size_t at = std::min<size_t>(e.byte > 0 ? e.byte - 1 : 0, text.size());
      fail("{}:{}: expected a JSON array of records, found invalid JSON at byte {}", path,
           1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(at), '\n'), e.byte);
    }
    const std::vector<size_t> lines = array_element_lines(text);
    FLORA_ASSERT(lines.size() == all.size());
    for (size_t i = 0; i < all.size() && !full(); ++i, ++records) add(lines[i], [&] { return all[i]; });
  } else {  // JSON lines
    size_t line_no = 0, pos = 0;
    while (pos < text.size() && !full()) {
      size_t end = text.find('\n', pos);
      if (end == std::string::npos) end = text.size();
      const std::string line = text.substr(pos, end - pos);
      pos = end + 1;
      ++line_no;
      if (line.find_first_not_of(" \t\r\f\v") == std::string::npos) continue;
      ++records;
      add(line_no, [&] {
        try {
          return Json::parse(line);
        } catch (const nlohmann::json::parse_error& e) {
          fail("expected one JSON object per line, found invalid JSON at byte {}", e.byte);
        }
      });
    }
  }
  if (records == 0) fail("{}: expected JSON records, found none", path);
  if (set.records.empty())
    fail("{}: expected at least one valid record, found none ({} skipped; the first: {})", path, set.skipped,
         set.skip_messages.front());
  return set;
}

std::string record_prompt(const EvalRecord& record) { return alpaca_prompt(record.instruction, record.input); }

std::vector<std::string> mcq_continuations(const EvalRecord& record) {
  std::vector<std::string> out;
  for (const auto& label : record.labels) out.push_back(record.continuation_prefix + label);
  return out;
}

size_t mcq_reference_index(const EvalRecord& record) {
  const auto want = parse_mcq_reference(record.reference, {});
  for (size_t i = 0; i < record.labels.size(); ++i)
    if (want && parse_mcq_reference(record.labels[i], {}) == want) return i;
  fail("reference '{}' is not among the options {}", record.reference, join(record.labels, "/"));
}

std::vector<PplWindow> ppl_windows(int64_t n_tokens, int64_t window, int64_t stride) {
  if (window < 2) fail("--ppl-window: expected at least 2 tokens, found {}", window);
  if (stride < 1 || stride > window) fail("--ppl-stride: expected 1 to the window ({}), found {}", window, stride);
  std::vector<PplWindow> out;
  if (n_tokens < 2) return out;
  int64_t prev_end = 0;
  for (int64_t begin = 0;; begin += stride) {
    const int64_t end = std::min(begin + window, n_tokens);
    const int64_t from = std::max(prev_end, begin + 1);
    if (from < end) out.push_back({begin, end, from});
    prev_end = end;
    if (end == n_tokens) break;
  }
  return out;
}

}  // namespace flora::eval
