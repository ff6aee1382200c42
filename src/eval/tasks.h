// The records of evaluation data sets, as `flora eval` reads them, and what
// each becomes: a prompt, a reference answer, and for multiple choice the
// options a log-likelihood comparison ranks.
//
// Every record becomes (instruction, input), and its prompt is
//   [bos] + alpaca_prompt(instruction, input)          (tokenizer/chat_template.h)
// which is how LLM-Adapters evaluates and how flora's trainer builds its
// training prompts. The forms (keys; "id" is allowed in every form and kept):
//
//   mcq   LLM-Adapters  {instruction, input?, output?, answer}: instruction and
//                       input as they are; answer "option2", "answer3",
//                       "solution1", "ending4", "true"/"false" or a letter.
//         plain         {question, choices, answer}: instruction =
//                         QUESTION + "\n" + "Answer1: C1 Answer2: C2 ... AnswerN: CN"
//                         + "\n\nAnswer format: answer1/answer2/.../answerN"
//                       (the choices on one line, separated by spaces, as
//                       LLM-Adapters' ARC and OBQA files list them); answer:
//                       the 0-based index of the choice (a JSON integer), the
//                       text of a choice, a letter "B", or a word "answer2" /
//                       "option2"; the reference becomes "answerK" in the form
//                       the prompt asks for.
//   math  LLM-Adapters  {instruction, input?, output?, answer}: answer a number
//                       (JSON number or text).
//         GSM8K         {question, answer}: instruction = question; answer the
//                       GSM8K solution ending in "#### NUMBER" (or a number).
//   rouge SAMSum        {dialogue, summary}: instruction = kSummarizeDialogueInstruction.
//         XSum-like     {document, summary}: instruction = kSummarizeDocumentInstruction;
//                       input = the dialogue or document, reference = the summary.
//   ppl   JSONL         {text}: one document per record;
//         plain text    any file not ending in .jsonl or .json: one document.
//
// Files are JSON lines (blank lines ignored) or one JSON array of records (the
// test.json files of LLM-Adapters). Errors read "FILE:LINE: ..." with the line
// where the record starts; an unknown key is an error, not ignored.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "eval/score.h"
#include "util/json.h"

namespace flora::eval {

enum class EvalTask { Mcq, Math, Rouge, Ppl };

// "mcq" | "math" | "rouge" | "ppl"; fails otherwise.
EvalTask parse_eval_task(const std::string& name);
std::string eval_task_name(EvalTask task);
// The scoring task of mcq, math and rouge (eval/score.h); fails for ppl.
Task score_task(EvalTask task);
// Generation length when --max-new-tokens is not given: mcq 32, math 256, rouge 128 (ppl 0).
int64_t default_max_new_tokens(EvalTask task);

enum class RecordForm { LlmAdapters, PlainMcq, Gsm8k, Dialogue, Document, Text };
// "llm-adapters", "plain-mcq", "gsm8k", "dialogue", "document", "text"
const char* record_form_name(RecordForm form);

struct EvalRecord {
  size_t line = 0;  // 1-based line of the file where the record starts
  Json id;          // the record's "id", null when absent
  RecordForm form = RecordForm::LlmAdapters;
  std::string instruction, input;  // the prompt: alpaca_prompt(instruction, input)
  // mcq: "option2", "answer3", "true", "B" (plain records: "answerK");
  // math: a number or a GSM8K answer; rouge: the summary.
  std::string reference;
  std::vector<std::string> choices;  // plain mcq: the choices' texts
  // mcq: the option words the model chooses among ("answer1", ...; from the
  // instruction's "Answer format:" line when it has one), and the text before
  // the option word in the answer the model was trained to write ("the
  // correct answer is "): the continuations of `--mcq-mode loglik`.
  std::vector<std::string> labels;
  std::string continuation_prefix;
  std::string text;  // ppl: the document
};

struct RecordSet {
  std::string path;
  std::vector<EvalRecord> records;
  size_t skipped = 0;                      // bad records skipped (skip_bad)
  std::vector<std::string> skip_messages;  // "FILE:LINE: ..." of each
};

// The plain multiple-choice instruction (see above).
std::string plain_mcq_instruction(const std::string& question, const std::vector<std::string>& choices);

// One record of the task; throws flora::Error ("key 'answer': expected ...")
// without a FILE:LINE prefix.
EvalRecord record_from_json(EvalTask task, const Json& value);

// Reads the records of FILE (see above). limit > 0: stop after that many good
// records. skip_bad: a bad record is counted and its message kept instead of
// failing. Fails on an empty file and when no record is good.
RecordSet read_records(const std::string& path, EvalTask task, bool skip_bad, size_t limit = 0);

// The prompt text of a record (the caller adds bos): alpaca_prompt(instruction, input).
std::string record_prompt(const EvalRecord& record);

// mcq: continuation_prefix + label for each label.
std::vector<std::string> mcq_continuations(const EvalRecord& record);
// mcq: the index in `labels` of the reference answer.
size_t mcq_reference_index(const EvalRecord& record);

// Perplexity with a sliding window (as Hugging Face's perplexity guide): the
// model runs tokens [begin, end) with no earlier context, and scores the
// targets [score_from, end) (each predicted from the token before it) that no
// earlier window scored. Windows start every `stride` tokens; the first token
// of a text is never a target.
struct PplWindow {
  int64_t begin = 0, end = 0, score_from = 0;
};
std::vector<PplWindow> ppl_windows(int64_t n_tokens, int64_t window, int64_t stride);

}  // namespace flora::eval
