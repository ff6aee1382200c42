// flora eval's records: every form of every task (the fixtures in
// tests/fixtures/eval/records_*), the prompts they become, the errors of bad
// records (FILE:LINE), --skip-bad and --limit, perplexity windows; and the
// model-driven parts on the tiny fixture model: log-likelihoods against a
// joint forward pass, sliding-window perplexity against a direct computation,
// and outputs that do not depend on the batch size.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "eval/evaluate.h"
#include "eval/tasks.h"
#include "model/forward.h"
#include "scratch_dir.h"
#include "tokenizer/chat_template.h"
#include "util/error.h"

namespace flora::eval {
namespace {

const std::string kEval = std::string(FLORA_SOURCE_DIR) + "/tests/fixtures/eval/";
const std::string kTiny = std::string(FLORA_SOURCE_DIR) + "/tests/fixtures/tiny_llama/f32";
const std::string kTinyTokenizer = std::string(FLORA_SOURCE_DIR) + "/tests/fixtures/tokenizer/tiny_tokenizer.json";

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

class Records : public ScratchDirTest {
 protected:
  std::string write(const std::string& name, const std::string& text) {
    std::ofstream(path(name)) << text;
    return path(name);
  }
  // The message of reading `text` as a file of the task.
  std::string error(EvalTask task, const std::string& text, const std::string& name = "bad.jsonl") {
    const std::string p = write(name, text);
    return error_of([&] { read_records(p, task, false); });
  }
};

TEST_F(Records, LlmAdaptersMultipleChoice) {
  const RecordSet set = read_records(kEval + "records_mcq_llm_adapters.jsonl", EvalTask::Mcq, false);
  ASSERT_EQ(set.records.size(), 5u);
  EXPECT_EQ(set.skipped, 0u);
  const std::vector<size_t> lines = {1, 2, 3, 5, 6};  // line 4 is blank
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(set.records[i].line, lines[i]);
    EXPECT_EQ(set.records[i].form, RecordForm::LlmAdapters);
    EXPECT_EQ(set.records[i].input, "");
    EXPECT_EQ(set.records[i].continuation_prefix, "the correct answer is ");
    EXPECT_TRUE(set.records[i].choices.empty());
  }
  const auto& arc = set.records[0];
  EXPECT_TRUE(contains(arc.instruction, "Which gas do plants take in?\n\nAnswer1: oxygen"));
  EXPECT_EQ(arc.reference, "answer2");
  EXPECT_EQ(arc.labels, (std::vector<std::string>{"answer1", "answer2", "answer3", "answer4"}));
  EXPECT_EQ(mcq_reference_index(arc), 1u);
  EXPECT_EQ(mcq_continuations(arc)[3], "the correct answer is answer4");
  EXPECT_EQ(set.records[1].labels, (std::vector<std::string>{"true", "false"}));
  EXPECT_EQ(set.records[2].labels, (std::vector<std::string>{"solution1", "solution2"}));
  EXPECT_EQ(set.records[3].labels, (std::vector<std::string>{"option1", "option2"}));
  EXPECT_EQ(set.records[3].id, Json("wino-1"));
  EXPECT_TRUE(set.records[2].id.is_null());
  EXPECT_EQ(set.records[4].labels.size(), 4u);
  EXPECT_EQ(mcq_reference_index(set.records[4]), 0u);
  // The prompt: the Alpaca template around the instruction, as LLM-Adapters evaluates.
  EXPECT_EQ(record_prompt(arc), alpaca_prompt(arc.instruction, ""));
  EXPECT_TRUE(contains(record_prompt(arc), "### Instruction:\nPlease choose the correct answer"));
  EXPECT_TRUE(record_prompt(arc).ends_with("answer4\n\n### Response:\n"));
}

TEST_F(Records, AnswerFormatLineOrDefaultOptions) {
  const std::string p = write("a.jsonl",
                              "{\"instruction\": \"Pick.\", \"answer\": \"answer3\", \"output\": \"I pick answer3\"}\n"
                              "{\"instruction\": \"Pick.\\n\\nAnswer format: answer1/answer2/answer3\", \"input\": "
                              "\"context\", \"answer\": \"answer3\"}\n");
  const RecordSet set = read_records(p, EvalTask::Mcq, false);
  EXPECT_EQ(set.records[0].labels.size(), 5u);               // no format line: answer1..answer5
  EXPECT_EQ(set.records[0].continuation_prefix, "I pick ");  // from the gold output
  EXPECT_EQ(set.records[1].labels.size(), 3u);
  EXPECT_EQ(record_prompt(set.records[1]), alpaca_prompt(set.records[1].instruction, "context"));
  EXPECT_TRUE(contains(record_prompt(set.records[1]), "### Input:\ncontext\n\n### Response:\n"));
}

TEST_F(Records, PlainMultipleChoice) {
  const RecordSet set = read_records(kEval + "records_mcq_plain.jsonl", EvalTask::Mcq, false);
  ASSERT_EQ(set.records.size(), 4u);
  const auto& r = set.records[0];
  EXPECT_EQ(r.form, RecordForm::PlainMcq);
  EXPECT_EQ(r.instruction,
            "What color is the sky on a clear day?\nAnswer1: green Answer2: blue Answer3: red\n\n"
            "Answer format: answer1/answer2/answer3");
  EXPECT_EQ(r.choices, (std::vector<std::string>{"green", "blue", "red"}));
  EXPECT_EQ(r.labels, (std::vector<std::string>{"answer1", "answer2", "answer3"}));
  EXPECT_EQ(r.continuation_prefix, "the correct answer is ");
  // Answers as an index from 0, a letter, a choice's text and a word all become answerK.
  EXPECT_EQ(set.records[0].reference, "answer2");
  EXPECT_EQ(set.records[1].reference, "answer3");
  EXPECT_EQ(set.records[2].reference, "answer2");
  EXPECT_EQ(set.records[2].id, Json(17));
  EXPECT_EQ(set.records[3].reference, "answer2");
  EXPECT_EQ(plain_mcq_instruction("Q?", {"a", "b"}), "Q?\nAnswer1: a Answer2: b\n\nAnswer format: answer1/answer2");
}

TEST_F(Records, MathForms) {
  const RecordSet gsm = read_records(kEval + "records_math_gsm8k.jsonl", EvalTask::Math, false);
  ASSERT_EQ(gsm.records.size(), 3u);
  EXPECT_EQ(gsm.records[0].form, RecordForm::Gsm8k);
  EXPECT_EQ(gsm.records[0].instruction, "Tom has 3 apples and buys 4 more. How many apples does he have?");
  EXPECT_TRUE(gsm.records[0].reference.ends_with("#### 7"));
  // LLM-Adapters' math test.json: a JSON array; lines are where each record starts.
  const RecordSet la = read_records(kEval + "records_math_llm_adapters.json", EvalTask::Math, false);
  ASSERT_EQ(la.records.size(), 3u);
  EXPECT_EQ(la.records[0].line, 2u);
  EXPECT_EQ(la.records[1].line, 8u);
  EXPECT_EQ(la.records[2].line, 9u);
  EXPECT_EQ(la.records[0].reference, "72");
  EXPECT_EQ(la.records[1].reference, "2.75");  // a JSON number
  EXPECT_EQ(la.records[2].input, "Answer with a number of miles.");
  EXPECT_EQ(la.records[2].form, RecordForm::LlmAdapters);
}

TEST_F(Records, SummaryForms) {
  const RecordSet d = read_records(kEval + "records_samsum.jsonl", EvalTask::Rouge, false);
  ASSERT_EQ(d.records.size(), 2u);
  EXPECT_EQ(d.records[0].form, RecordForm::Dialogue);
  EXPECT_EQ(d.records[0].instruction, kSummarizeDialogueInstruction);
  EXPECT_TRUE(d.records[0].input.starts_with("Amanda: I baked cookies."));
  EXPECT_EQ(d.records[0].reference, "Amanda baked cookies and will bring Jerry some tomorrow.");
  EXPECT_EQ(d.records[0].id, Json("13818513"));
  EXPECT_EQ(record_prompt(d.records[0]), alpaca_prompt(kSummarizeDialogueInstruction, d.records[0].input));
  const RecordSet x = read_records(kEval + "records_xsum.jsonl", EvalTask::Rouge, false);
  ASSERT_EQ(x.records.size(), 2u);
  EXPECT_EQ(x.records[1].form, RecordForm::Document);
  EXPECT_EQ(x.records[1].instruction, kSummarizeDocumentInstruction);
}

TEST_F(Records, TextForms) {
  const RecordSet j = read_records(kEval + "records_ppl.jsonl", EvalTask::Ppl, false);
  ASSERT_EQ(j.records.size(), 2u);
  EXPECT_EQ(j.records[1].text, "Call me Ishmael.");
  EXPECT_EQ(j.records[1].id, Json("moby"));
  const RecordSet t = read_records(kEval + "records_ppl.txt", EvalTask::Ppl, false);
  ASSERT_EQ(t.records.size(), 1u);  // a plain text file is one document
  EXPECT_TRUE(t.records[0].text.starts_with("It is a truth universally acknowledged"));
  EXPECT_EQ(t.records[0].form, RecordForm::Text);
}

TEST_F(Records, ErrorsNameFileAndLine) {
  EXPECT_TRUE(
      contains(error(EvalTask::Mcq, "{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"answer\": 0}\nnot json\n"),
               "bad.jsonl:2: expected one JSON object per line, found invalid JSON"));
  EXPECT_TRUE(
      contains(error(EvalTask::Mcq, "{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"answer\": 0, \"x\": 1}"),
               "bad.jsonl:1: unknown key 'x': expected only the keys question, choices, answer, id of a plain "
               "multiple-choice record"));
  EXPECT_TRUE(contains(error(EvalTask::Mcq, "\n\n{\"instruction\": \"i\", \"answer\": \"option1\", \"label\": 2}"),
                       "bad.jsonl:3: unknown key 'label': expected only the keys instruction, input, output, answer, "
                       "id of an LLM-Adapters record"));
  EXPECT_TRUE(contains(error(EvalTask::Mcq, "{\"prompt\": \"p\"}"),
                       "bad.jsonl:1: expected an LLM-Adapters record {instruction, input, output, answer} or a plain "
                       "record {question, choices, answer}, found keys prompt"));
  EXPECT_TRUE(contains(error(EvalTask::Mcq, "{\"instruction\": \"i\"}"), "bad.jsonl:1: expected key 'answer'"));
  EXPECT_TRUE(contains(error(EvalTask::Mcq, "{\"instruction\": \"i\", \"answer\": \"option0\"}"),
                       "bad.jsonl:1: key 'answer': expected option1.."));
  EXPECT_TRUE(contains(error(EvalTask::Mcq, "{\"instruction\": 5, \"answer\": \"true\"}"),
                       "bad.jsonl:1: key 'instruction': expected a string, found 5"));
  EXPECT_TRUE(contains(error(EvalTask::Mcq,
                             "{\"instruction\": \"i\\n\\nAnswer format: answer1/answer2\", \"answer\": "
                             "\"answer3\"}"),
                       "key 'answer': 'answer3' is not among the options answer1/answer2"));
  EXPECT_TRUE(contains(error(EvalTask::Mcq, "{\"question\": \"q\", \"choices\": \"a, b\", \"answer\": 0}"),
                       "bad.jsonl:1: key 'choices': expected a list of 2 to 26 strings"));
  EXPECT_TRUE(contains(error(EvalTask::Mcq, "{\"question\": \"q\", \"choices\": [\"a\", 3], \"answer\": 0}"),
                       "key 'choices': item 2: expected a non-empty string, found 3"));
  EXPECT_TRUE(contains(error(EvalTask::Mcq, "{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"answer\": 2}"),
                       "key 'answer': expected a choice's index, 0 to 1, found 2"));
  EXPECT_TRUE(contains(error(EvalTask::Mcq, "{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"answer\": \"C\"}"),
                       "key 'answer': \"C\" is beyond the 2 choices"));
  EXPECT_TRUE(
      contains(error(EvalTask::Mcq, "{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"answer\": \"zebra\"}"),
               "key 'answer': expected a choice's index from 0, its text, a letter or answer1.."));
  EXPECT_TRUE(contains(error(EvalTask::Math, "{\"question\": \"q\", \"answer\": \"no number\"}"),
                       "bad.jsonl:1: key 'answer': reference 'no number': expected a number"));
  EXPECT_TRUE(contains(error(EvalTask::Math, "{\"question\": \"q\", \"answer\": \"x #### y\"}"),
                       "key 'answer': reference 'x #### y': expected a number after '####'"));
  EXPECT_TRUE(contains(error(EvalTask::Math, "{\"question\": \"q\", \"choices\": [], \"answer\": \"1\"}"),
                       "unknown key 'choices': expected only the keys question, answer, id of a GSM8K record"));
  EXPECT_TRUE(contains(error(EvalTask::Math, "[1, 2]"), "bad.jsonl:1: expected a JSON object, found 1"));
  EXPECT_TRUE(contains(error(EvalTask::Rouge, "{\"dialogue\": \"a\", \"document\": \"b\", \"summary\": \"s\"}"),
                       "expected a record {dialogue, summary} or {document, summary}, found keys dialogue, document, "
                       "summary"));
  EXPECT_TRUE(contains(error(EvalTask::Rouge, "{\"dialogue\": \"a: hi\"}"), "bad.jsonl:1: expected key 'summary'"));
  EXPECT_TRUE(contains(error(EvalTask::Rouge, "{\"dialogue\": \" \", \"summary\": \"s\"}"),
                       "key 'dialogue': expected text, found an empty string"));
  EXPECT_TRUE(contains(error(EvalTask::Ppl, "{\"text\": [\"a\"]}"), "bad.jsonl:1: key 'text': expected a string"));
  EXPECT_TRUE(contains(error(EvalTask::Ppl, "{\"text\": \"a\", \"meta\": {}}"), "unknown key 'meta'"));
  EXPECT_TRUE(contains(error(EvalTask::Mcq, "{\"id\": [1], \"question\": \"q\"}"),
                       "key 'id': expected a string or an integer"));
  EXPECT_TRUE(contains(error(EvalTask::Mcq, ""), "bad.jsonl: expected JSON records, found an empty file"));
  EXPECT_TRUE(contains(error(EvalTask::Ppl, "", "empty.txt"), "empty.txt: expected text, found an empty file"));
  // A JSON array: the line where the bad record starts, and invalid JSON by its line.
  EXPECT_TRUE(
      contains(error(EvalTask::Math,
                     "[\n  {\"question\": \"q\", \"answer\": \"1\"},\n\n  {\"question\": \"q\",\n   \"answer\": "
                     "true}\n]\n",
                     "bad.json"),
               "bad.json:4: key 'answer': expected a string or a number, found true"));
  EXPECT_TRUE(contains(error(EvalTask::Math, "[\n  {\"question\": \"q\", \"answer\": \"1\"},\n  {oops}\n]", "bad.json"),
                       "bad.json:3: expected a JSON array of records, found invalid JSON at byte"));
  EXPECT_TRUE(contains(error_of([] { read_records("/nonexistent/x.jsonl", EvalTask::Mcq, false); }), "x.jsonl"));
}

TEST_F(Records, SkipBadCountsAndLimitStops) {
  const std::string p = write("mixed.jsonl",
                              "{\"question\": \"1+1?\", \"answer\": \"#### 2\"}\n"
                              "{\"question\": \"bad\"}\n"
                              "oops\n"
                              "{\"question\": \"2+2?\", \"answer\": 4}\n"
                              "{\"question\": \"3+3?\", \"answer\": \"6\"}\n");
  const RecordSet all = read_records(p, EvalTask::Math, true);
  EXPECT_EQ(all.records.size(), 3u);
  EXPECT_EQ(all.skipped, 2u);
  ASSERT_EQ(all.skip_messages.size(), 2u);
  EXPECT_TRUE(contains(all.skip_messages[0], "mixed.jsonl:2: expected key 'answer'"));
  EXPECT_TRUE(contains(all.skip_messages[1], "mixed.jsonl:3: expected one JSON object per line"));
  EXPECT_EQ(all.records[1].line, 4u);
  EXPECT_TRUE(contains(error_of([&] { read_records(p, EvalTask::Math, false); }), "mixed.jsonl:2:"));
  const RecordSet two = read_records(p, EvalTask::Math, true, 2);
  EXPECT_EQ(two.records.size(), 2u);
  EXPECT_EQ(two.records[1].line, 4u);
  const RecordSet one = read_records(p, EvalTask::Math, false, 1);  // stops before the bad line
  EXPECT_EQ(one.records.size(), 1u);
  const std::string bad = write("allbad.jsonl", "{}\n[]\n");
  EXPECT_TRUE(contains(error_of([&] { read_records(bad, EvalTask::Math, true); }),
                       "allbad.jsonl: expected at least one valid record, found none (2 skipped; the first: "));
}

TEST(PplWindows, EveryTargetOnceWithAsMuchContextAsTheWindowGives) {
  const auto w = ppl_windows(10, 4, 2);
  ASSERT_EQ(w.size(), 4u);
  EXPECT_EQ(w[0].begin, 0);
  EXPECT_EQ(w[0].end, 4);
  EXPECT_EQ(w[0].score_from, 1);
  EXPECT_EQ(w[1].begin, 2);
  EXPECT_EQ(w[1].score_from, 4);
  EXPECT_EQ(w[3].end, 10);
  EXPECT_EQ(w[3].score_from, 8);
  for (int64_t n : {1, 2, 3, 7, 16, 33})
    for (int64_t window : {2, 3, 5, 8, 16, 40})
      for (int64_t stride = 1; stride < window; ++stride) {
        std::vector<int> scored(n, 0);
        for (const auto& x : ppl_windows(n, window, stride)) {
          EXPECT_LE(x.end - x.begin, window);
          EXPECT_GT(x.score_from, x.begin);
          for (int64_t t = x.score_from; t < x.end; ++t) ++scored[t];
        }
        for (int64_t t = 1; t < n; ++t) EXPECT_EQ(scored[t], 1) << n << " " << window << " " << stride << " " << t;
      }
  EXPECT_TRUE(ppl_windows(1, 4, 2).empty());
  EXPECT_TRUE(contains(error_of([] { ppl_windows(5, 1, 1); }), "--ppl-window: expected at least 2 tokens"));
  EXPECT_TRUE(contains(error_of([] { ppl_windows(5, 4, 5); }), "--ppl-stride: expected 1 to the window (4)"));
}

// ---- on the tiny model ----

class TinyEval : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = LlamaModel::load(kTiny);
    tok_ = std::make_unique<Tokenizer>(Tokenizer::from_file(kTinyTokenizer));
    pool_ = std::make_unique<ThreadPool>(2);
  }
  EvalModel eval_model() const { return EvalModel{model_.get(), tok_.get(), pool_.get(), nullptr, nullptr}; }
  // Log-probability of `cont` after `prompt`, from one forward pass over both.
  double joint_logprob(const std::vector<int32_t>& prompt, const std::vector<int32_t>& cont) {
    std::vector<int32_t> all = prompt;
    all.insert(all.end(), cont.begin(), cont.end());
    const int64_t V = model_->config().vocab_size, T = static_cast<int64_t>(all.size());
    Forward f(*model_, *pool_, T);
    const float* logits = f.forward(all.data(), T, true);
    double lp = 0;
    for (size_t j = 0; j < cont.size(); ++j) {
      const float* row = logits + (static_cast<int64_t>(prompt.size() + j) - 1) * V;
      double sum = 0;
      for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(row[v]));
      lp += row[cont[j]] - std::log(sum);
    }
    return lp;
  }
  std::shared_ptr<LlamaModel> model_;
  std::unique_ptr<Tokenizer> tok_;
  std::unique_ptr<ThreadPool> pool_;
};

TEST_F(TinyEval, LoglikEqualsJointForwardAndIgnoresBatch) {
  RecordSet data = read_records(kEval + "records_mcq_llm_adapters.jsonl", EvalTask::Mcq, false);
  const RecordSet plain = read_records(kEval + "records_mcq_plain.jsonl", EvalTask::Mcq, false);
  data.records.insert(data.records.end(), plain.records.begin(), plain.records.end());
  EvalSettings s;
  s.task = EvalTask::Mcq;
  s.mcq_mode = McqMode::Loglik;
  s.batch = 3;
  const EvalResult r = evaluate(eval_model(), data, s);
  ASSERT_EQ(r.examples.size(), data.records.size());
  size_t correct = 0;
  for (size_t i = 0; i < data.records.size(); ++i) {
    const auto& rec = data.records[i];
    const Json& e = r.examples[i];
    const auto prompt = tok_->encode(record_prompt(rec), true, false);
    const auto conts = mcq_continuations(rec);
    ASSERT_EQ(e["options"].size(), conts.size());
    size_t best = 0;
    std::vector<double> want;
    for (size_t c = 0; c < conts.size(); ++c) {
      want.push_back(joint_logprob(prompt, tok_->encode(conts[c], false, false)));
      EXPECT_NEAR(e["options"][c]["logprob"].get<double>(), want[c], 1e-6 * std::fabs(want[c])) << i << " " << c;
      if (want[c] > want[best]) best = c;
    }
    EXPECT_EQ(e["prediction"], conts[best]);
    EXPECT_EQ(e["extracted"], rec.labels[best]);
    correct += best == mcq_reference_index(rec);
  }
  EXPECT_DOUBLE_EQ(r.metric("accuracy"), static_cast<double>(correct) / data.records.size());
  s.batch = 1;
  const EvalResult one = evaluate(eval_model(), data, s);
  for (size_t i = 0; i < data.records.size(); ++i) EXPECT_EQ(one.examples[i], r.examples[i]) << i;
}

TEST_F(TinyEval, SlidingWindowPerplexityEqualsDirectComputation) {
  const RecordSet data = read_records(kEval + "records_ppl.jsonl", EvalTask::Ppl, false);
  const int64_t window = 16, stride = 6, V = model_->config().vocab_size;
  EvalSettings s;
  s.task = EvalTask::Ppl;
  s.ppl_window = window;
  s.ppl_stride = stride;
  const EvalResult r = evaluate(eval_model(), data, s);
  // Directly: each target t after the tokens of the first window (starts 0, stride, 2 stride, ...)
  // that reaches past it, from that window's start.
  double nll = 0;
  int64_t scored = 0;
  for (const auto& rec : data.records) {
    const auto ids = tok_->encode(rec.text, true, false);
    const int64_t n = static_cast<int64_t>(ids.size());
    for (int64_t t = 1; t < n; ++t) {
      int64_t begin = 0;
      while (std::min(begin + window, n) <= t) begin += stride;
      Forward f(*model_, *pool_, window);
      const float* row = f.forward(ids.data() + begin, t - begin, false);
      double sum = 0;
      for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(row[v]));
      nll += std::log(sum) - row[ids[t]];
      ++scored;
    }
  }
  EXPECT_EQ(r.counts["scored_tokens"].get<int64_t>(), scored);
  EXPECT_NEAR(r.metric("nll"), nll / scored, 1e-6);
  EXPECT_NEAR(r.metric("perplexity"), std::exp(nll / scored), 1e-6 * std::exp(nll / scored));
}

TEST_F(TinyEval, GenerationDoesNotDependOnTheBatch) {
  const RecordSet data = read_records(kEval + "records_math_gsm8k.jsonl", EvalTask::Math, false);
  EvalSettings s;
  s.task = EvalTask::Math;
  s.max_new_tokens = 12;
  for (float temp : {0.0f, 0.8f}) {
    s.sampling.temperature = temp;
    s.batch = 1;
    const EvalResult one = evaluate(eval_model(), data, s);
    s.batch = 2;
    size_t progress_calls = 0;
    const EvalResult two = evaluate(eval_model(), data, s, [&](const EvalProgress& p) {
      EXPECT_EQ(p.total, 3u);
      ++progress_calls;
    });
    EXPECT_EQ(progress_calls, 4u);  // 0, then each example
    ASSERT_EQ(one.examples.size(), 3u);
    for (size_t i = 0; i < 3; ++i)
      EXPECT_EQ(one.examples[i], two.examples[i]) << "temperature " << temp << " example " << i;
    EXPECT_EQ(one.generated_tokens, two.generated_tokens);
    EXPECT_LE(one.generated_tokens, 36);
    EXPECT_EQ(one.metric("accuracy"), two.metric("accuracy"));
  }
}

}  // namespace
}  // namespace flora::eval
