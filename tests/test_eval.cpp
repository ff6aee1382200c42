// Evaluation without a model: ROUGE (as rouge-score computes it by default),
// answer extraction for math and multiple choice, and JSONL scoring with its errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "eval/answers.h"
#include "eval/rouge.h"
#include "eval/score.h"
#include "util/error.h"
#include "util/file.h"

using namespace flora;
using namespace flora::eval;
using Tokens = std::vector<std::string>;

namespace {

const std::string kFixtures = std::string(FLORA_SOURCE_DIR) + "/tests/fixtures/eval/";

void expect_score(const RougeScore& s, double p, double r, double f) {
  EXPECT_NEAR(s.precision, p, 1e-12);
  EXPECT_NEAR(s.recall, r, 1e-12);
  EXPECT_NEAR(s.f1, f, 1e-12);
}

// A temporary JSONL file with `text`; removed at scope exit.
struct TempFile {
  std::string path;
  explicit TempFile(const std::string& text) {
    static int n = 0;
    path = (std::filesystem::temp_directory_path() / ("flora_test_eval_" + std::to_string(::getpid()) + "_" +
                                                      std::to_string(n++) + ".jsonl"))
               .string();
    write_file_atomic(path, text);
  }
  ~TempFile() { std::filesystem::remove(path); }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

// ---------------------------------------------------------------- ROUGE

TEST(Rouge, TokenizerLowercasesAndSplitsOnNonAlphanumerics) {
  EXPECT_EQ(rouge_tokenize("Hello, World!"), (Tokens{"hello", "world"}));
  EXPECT_EQ(rouge_tokenize("  it's 3.14 -- e-mail\tTAB\nnew"),
            (Tokens{"it", "s", "3", "14", "e", "mail", "tab", "new"}));
  EXPECT_EQ(rouge_tokenize("caf\xc3\xa9 na\xc3\xafve"), (Tokens{"caf", "na", "ve"}));  // non-ASCII separates
  EXPECT_TRUE(rouge_tokenize("").empty());
  EXPECT_TRUE(rouge_tokenize("?!. ,").empty());
}

TEST(Rouge, CatSatVersusCatIs) {
  // candidate: the cat sat on the mat   reference: the cat is on the mat  (6 tokens each)
  // unigrams: cand {the:2, cat, sat, on, mat}, ref {the:2, cat, is, on, mat}
  //   overlap = min(2,2) + cat + on + mat = 5  -> P = R = F = 5/6
  // bigrams: cand {the cat, cat sat, sat on, on the, the mat}
  //          ref  {the cat, cat is, is on, on the, the mat}
  //   overlap = the cat, on the, the mat = 3 of 5 each -> P = R = F = 3/5
  // LCS: the cat on the mat = 5 -> P = R = F = 5/6
  const RougeScores s = rouge("the cat sat on the mat", "the cat is on the mat");
  expect_score(s.rouge1, 5.0 / 6, 5.0 / 6, 5.0 / 6);
  expect_score(s.rouge2, 0.6, 0.6, 0.6);
  expect_score(s.rougeL, 5.0 / 6, 5.0 / 6, 5.0 / 6);
}

TEST(Rouge, ShortCandidateHasFullPrecision) {
  // candidate "the cat" (2 tokens, 1 bigram); reference "the cat sat on the mat" (6 tokens, 5 bigrams)
  // ROUGE-1: overlap 2 -> P = 2/2 = 1, R = 2/6 = 1/3, F = 2 (1)(1/3) / (4/3) = 1/2
  // ROUGE-2: overlap 1 -> P = 1, R = 1/5, F = 2 (1/5) / (6/5) = 1/3
  // ROUGE-L: LCS 2 -> same as ROUGE-1
  const RougeScores s = rouge("the cat", "the cat sat on the mat");
  expect_score(s.rouge1, 1, 1.0 / 3, 0.5);
  expect_score(s.rouge2, 1, 0.2, 1.0 / 3);
  expect_score(s.rougeL, 1, 1.0 / 3, 0.5);
}

TEST(Rouge, CountsAreClipped) {
  // candidate the x4 against reference "the cat": overlap min(4, 1) = 1
  // P = 1/4, R = 1/2, F = 2 (1/8) / (3/4) = 1/3
  expect_score(rouge("the the the the", "the cat").rouge1, 0.25, 0.5, 1.0 / 3);
}

TEST(Rouge, LcsRespectsOrder) {
  // same bag of words, reversed: ROUGE-1 = 1, no common bigram, LCS = 1 of 4
  const RougeScores s = rouge("a b c d", "d c b a");
  expect_score(s.rouge1, 1, 1, 1);
  expect_score(s.rouge2, 0, 0, 0);
  expect_score(s.rougeL, 0.25, 0.25, 0.25);
  EXPECT_EQ(lcs_length({"a", "x", "b", "y", "c"}, {"a", "b", "c"}), 3u);
}

TEST(Rouge, PunctuationAndCaseDoNotMatter) {
  const RougeScores s = rouge("HELLO... world!!!", "hello world");
  expect_score(s.rouge1, 1, 1, 1);
  expect_score(s.rouge2, 1, 1, 1);
  expect_score(s.rougeL, 1, 1, 1);
}

TEST(Rouge, EmptyStringsScoreZero) {
  for (const auto& [c, r] : std::vector<std::pair<std::string, std::string>>{{"", "a b"}, {"a b", ""}, {"", ""},
                                                                             {"!!", "a"}}) {
    const RougeScores s = rouge(c, r);
    expect_score(s.rouge1, 0, 0, 0);
    expect_score(s.rouge2, 0, 0, 0);
    expect_score(s.rougeL, 0, 0, 0);
  }
  // one token each: a unigram match but no bigrams at all
  const RougeScores s = rouge("word", "Word.");
  expect_score(s.rouge1, 1, 1, 1);
  expect_score(s.rouge2, 0, 0, 0);
}

// ---------------------------------------------------------------- math

TEST(Math, ExtractsTheLastNumber) {
  EXPECT_EQ(extract_last_number("The answer is 1,234."), 1234.0);
  EXPECT_EQ(extract_last_number("-3.5"), -3.5);
  EXPECT_EQ(extract_last_number("It costs $12"), 12.0);
  EXPECT_EQ(extract_last_number("He owes -$7 now"), -7.0);
  EXPECT_EQ(extract_last_number("no number"), std::nullopt);
  EXPECT_EQ(extract_last_number(""), std::nullopt);
  EXPECT_EQ(extract_last_number("3 apples and 4 pears make 7 fruits"), 7.0);
  EXPECT_EQ(extract_last_number("12 * 3 = 36. So the answer is 36."), 36.0);
  EXPECT_EQ(extract_last_number("pages 3-4"), 4.0);  // a hyphen after a digit is no minus sign
  EXPECT_EQ(extract_last_number("x = 1,234,567.25!"), 1234567.25);
  EXPECT_EQ(extract_last_number("1, 2, 3"), 3.0);     // a comma without three digits separates numbers
  EXPECT_EQ(extract_last_number("12,34"), 34.0);
  EXPECT_EQ(extract_last_number("0.5."), 0.5);
}

TEST(Math, ParsesGsm8kAnswers) {
  EXPECT_EQ(parse_gsm8k_answer("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72"), 72.0);
  EXPECT_EQ(parse_gsm8k_answer("#### 1,234"), 1234.0);
  EXPECT_EQ(parse_gsm8k_answer("so #### -5"), -5.0);
  EXPECT_EQ(parse_gsm8k_answer("the answer is 72"), std::nullopt);
  EXPECT_EQ(parse_gsm8k_answer("#### none"), std::nullopt);
}

TEST(Math, ComparesWithRelativeTolerance) {
  EXPECT_TRUE(numbers_match(72.0, 72));
  EXPECT_TRUE(numbers_match(0.00005, 0));         // 5e-5 <= 1e-4 * 1
  EXPECT_FALSE(numbers_match(0.0002, 0));
  EXPECT_TRUE(numbers_match(1000000.5, 1000000));  // 0.5 <= 1e-4 * 1e6 = 100
  EXPECT_FALSE(numbers_match(71, 72));
}

// ---------------------------------------------------------------- multiple choice

TEST(Mcq, ParsesReferences) {
  EXPECT_EQ(parse_mcq_reference("option2", {}), (McqKey{McqForm::Option, 1}));
  EXPECT_EQ(parse_mcq_reference(" answer5 ", {}), (McqKey{McqForm::Answer, 4}));
  EXPECT_EQ(parse_mcq_reference("solution1", {}), (McqKey{McqForm::Solution, 0}));
  EXPECT_EQ(parse_mcq_reference("ending4", {}), (McqKey{McqForm::Ending, 3}));
  EXPECT_EQ(parse_mcq_reference("true", {}), (McqKey{McqForm::TrueFalse, 0}));
  EXPECT_EQ(parse_mcq_reference("false", {}), (McqKey{McqForm::TrueFalse, 1}));
  EXPECT_EQ(parse_mcq_reference("C", {}), (McqKey{McqForm::Letter, 2}));
  EXPECT_EQ(parse_mcq_reference("blue", {"red", "blue"}), (McqKey{McqForm::Letter, 1}));
  EXPECT_EQ(parse_mcq_reference("blue", {}), std::nullopt);
  EXPECT_EQ(parse_mcq_reference("option", {}), std::nullopt);
  EXPECT_EQ(parse_mcq_reference("option0", {}), std::nullopt);
  EXPECT_EQ(parse_mcq_reference("c", {}), std::nullopt);
}

TEST(Mcq, ExtractsTheFirstOptionWordOfEachForm) {
  // LLM-Adapters: re.findall(r'option1|option2', text)[0], case-sensitive, no word boundaries
  EXPECT_EQ(extract_mcq_answer("option2 fits, not option1", McqForm::Option, 2, {}), (McqKey{McqForm::Option, 1}));
  EXPECT_EQ(extract_mcq_answer("the correct answer is answer3", McqForm::Answer, 5, {}),
            (McqKey{McqForm::Answer, 2}));
  EXPECT_EQ(extract_mcq_answer("solution1", McqForm::Solution, 2, {}), (McqKey{McqForm::Solution, 0}));
  EXPECT_EQ(extract_mcq_answer("ending4 then ending2", McqForm::Ending, 4, {}), (McqKey{McqForm::Ending, 3}));
  EXPECT_EQ(extract_mcq_answer("answer12", McqForm::Answer, 5, {}), (McqKey{McqForm::Answer, 0}));
  EXPECT_EQ(extract_mcq_answer("Option2", McqForm::Option, 2, {}), std::nullopt);   // case-sensitive
  EXPECT_EQ(extract_mcq_answer("option3", McqForm::Option, 2, {}), std::nullopt);   // beyond the options
  EXPECT_EQ(extract_mcq_answer("I am not sure", McqForm::Ending, 4, {}), std::nullopt);
}

TEST(Mcq, ExtractsTrueFalse) {
  EXPECT_EQ(extract_mcq_answer("the answer is false, not true", McqForm::TrueFalse, 2, {}),
            (McqKey{McqForm::TrueFalse, 1}));
  EXPECT_EQ(extract_mcq_answer("true", McqForm::TrueFalse, 2, {}), (McqKey{McqForm::TrueFalse, 0}));
  EXPECT_EQ(extract_mcq_answer("True", McqForm::TrueFalse, 2, {}), std::nullopt);  // as LLM-Adapters
}

TEST(Mcq, ExtractsLettersAndChoiceTexts) {
  const std::vector<std::string> choices = {"Paris", "London", "Berlin"};
  EXPECT_EQ(extract_mcq_answer("B", McqForm::Letter, 3, choices), (McqKey{McqForm::Letter, 1}));
  EXPECT_EQ(extract_mcq_answer("The answer is (C).", McqForm::Letter, 3, choices), (McqKey{McqForm::Letter, 2}));
  EXPECT_EQ(extract_mcq_answer("Answer: A", McqForm::Letter, 3, {}), (McqKey{McqForm::Letter, 0}));
  EXPECT_EQ(extract_mcq_answer("It must be london.", McqForm::Letter, 3, choices), (McqKey{McqForm::Letter, 1}));
  EXPECT_EQ(extract_mcq_answer("D is wrong, so B", McqForm::Letter, 3, choices), (McqKey{McqForm::Letter, 1}));
  EXPECT_EQ(extract_mcq_answer("Because Berlinale", McqForm::Letter, 3, choices), std::nullopt);  // inside words
  EXPECT_EQ(extract_mcq_answer("no idea", McqForm::Letter, 3, choices), std::nullopt);
  EXPECT_EQ(mcq_key_text({McqForm::Letter, 1}), "B");
  EXPECT_EQ(mcq_key_text({McqForm::Answer, 2}), "answer3");
  EXPECT_EQ(mcq_key_text({McqForm::TrueFalse, 1}), "false");
}

// ---------------------------------------------------------------- scoring

TEST(Score, McqFixture) {
  const ScoreResult r = score_jsonl(kFixtures + "mcq.jsonl", Task::Mcq, false);
  EXPECT_EQ(r.count, 8u);
  EXPECT_EQ(r.skipped, 0u);
  EXPECT_DOUBLE_EQ(r.metric("accuracy"), 5.0 / 8);     // lines 1, 3, 4, 5, 8
  EXPECT_DOUBLE_EQ(r.metric("unparseable"), 1.0 / 8);  // line 6
  EXPECT_EQ(r.examples[1].extracted, "answer1");
  EXPECT_EQ(r.examples[1].expected, "answer3");
  EXPECT_EQ(r.example_json(5)["verdict"], "unparseable");
  EXPECT_EQ(r.example_json(5)["line"], 6);
  EXPECT_EQ(r.example_json(0)["verdict"], "correct");
  EXPECT_EQ(r.example_json(6)["verdict"], "wrong");
}

TEST(Score, MathFixture) {
  const ScoreResult r = score_jsonl(kFixtures + "math.jsonl", Task::Math, false);
  EXPECT_EQ(r.count, 5u);
  EXPECT_DOUBLE_EQ(r.metric("accuracy"), 3.0 / 5);
  EXPECT_DOUBLE_EQ(r.metric("unparseable"), 1.0 / 5);
  EXPECT_EQ(r.examples[0].expected, "12");
  EXPECT_EQ(r.examples[1].extracted, "1234");
  EXPECT_EQ(r.examples[2].expected, "-3.5");
  EXPECT_FALSE(r.examples[4].correct);
}

TEST(Score, RougeFixture) {
  const ScoreResult r = score_jsonl(kFixtures + "rouge.jsonl", Task::Rouge, false);
  EXPECT_EQ(r.count, 3u);
  EXPECT_NEAR(r.metric("rouge1"), (5.0 / 6 + 1 + 0) / 3, 1e-12);
  EXPECT_NEAR(r.metric("rouge2"), (0.6 + 1 + 0) / 3, 1e-12);
  EXPECT_NEAR(r.metric("rougeL"), (5.0 / 6 + 1 + 0) / 3, 1e-12);
  const Json j = r.to_json();
  EXPECT_EQ(j["task"], "rouge");
  EXPECT_EQ(j["count"], 3);
  EXPECT_NEAR(j["metrics"]["rouge2"].get<double>(), 1.6 / 3, 1e-12);
  EXPECT_NEAR(r.example_json(0)["rouge2"]["f1"].get<double>(), 0.6, 1e-12);
}

TEST(Score, InMemoryExamples) {
  const ScoreResult r = score_examples(Task::Math, {{"so 10", "#### 10", {}}, {"so 9", "10", {}}});
  EXPECT_DOUBLE_EQ(r.metric("accuracy"), 0.5);
  EXPECT_NE(error_of([] { score_examples(Task::Math, {{"5", "five", {}}}); }).find("example 1: reference 'five'"),
            std::string::npos);
  EXPECT_EQ(parse_task("rouge"), Task::Rouge);
  EXPECT_NE(error_of([] { parse_task("bleu"); }).find("expected mcq, math or rouge"), std::string::npos);
}

TEST(Score, ErrorsNameFileAndLine) {
  struct Case {
    Task task;
    std::string text, expected;
  };
  const std::vector<Case> cases = {
      {Task::Rouge, "{\"prediction\": \"a\", \"reference\": \"b\"}\n{\"prediction\": \"a\", \"referen",
       ":2: expected one JSON object per line, found invalid JSON"},
      {Task::Rouge, "\n\n[1, 2]\n", ":3: expected a JSON object, found [1,2]"},
      {Task::Rouge, "{\"reference\": \"b\"}\n", ":1: expected key 'prediction' (a string)"},
      {Task::Rouge, "{\"prediction\": \"a\"}\n", ":1: expected key 'reference' (a string)"},
      {Task::Mcq, "{\"prediction\": \"a\"}\n", ":1: expected key 'reference' or 'answer'"},
      {Task::Rouge, "{\"prediction\": 3, \"reference\": \"b\"}\n", ":1: key 'prediction': expected a string, found 3"},
      {Task::Rouge, "{\"prediction\": \"a\", \"reference\": 4}\n", ":1: key 'reference': expected a string, found 4"},
      {Task::Math, "{\"prediction\": \"a\", \"answer\": [4]}\n",
       ":1: key 'answer': expected a string or a number, found [4]"},
      {Task::Math, "{\"prediction\": \"a\", \"answer\": \"#### ?\"}\n", ":1: reference '#### ?': expected a number"},
      {Task::Math, "{\"prediction\": \"a\", \"reference\": \"seven\"}\n", ":1: reference 'seven': expected a number"},
      {Task::Mcq, "{\"prediction\": \"a\", \"answer\": \"maybe\"}\n", ":1: reference 'maybe': expected option1"},
      {Task::Mcq, "{\"prediction\": \"a\", \"answer\": \"D\", \"choices\": [\"x\", \"y\"]}\n",
       ":1: reference 'D': expected one of 2 options"},
      {Task::Mcq, "{\"prediction\": \"a\", \"answer\": \"A\", \"choices\": \"x\"}\n",
       ":1: key 'choices': expected a list of strings"},
      {Task::Mcq, "{\"prediction\": \"a\", \"answer\": \"A\", \"choices\": [\"x\", 2]}\n",
       ":1: key 'choices': item 2: expected a string, found 2"},
  };
  for (const auto& c : cases) {
    TempFile f(c.text);
    const std::string message = error_of([&] { score_jsonl(f.path, c.task, false); });
    EXPECT_EQ(message.rfind(f.path, 0), 0u) << message;
    EXPECT_NE(message.find(c.expected), std::string::npos) << "expected '" << c.expected << "' in: " << message;
  }
}

TEST(Score, EmptyFileIsAnError) {
  for (const std::string text : {"", "\n  \n\r\n"}) {
    TempFile f(text);
    const std::string message = error_of([&] { score_jsonl(f.path, Task::Rouge, true); });
    EXPECT_EQ(message, f.path + ": expected JSON lines with a prediction and a reference, found an empty file");
  }
}

TEST(Score, SkipBadCountsSkippedLines) {
  TempFile f(
      "{\"prediction\": \"The answer is 4.\", \"reference\": 4}\n"
      "not json\n"
      "{\"prediction\": \"5\"}\n"
      "\n"
      "{\"prediction\": \"6\", \"reference\": \"7\"}\n");
  EXPECT_NE(error_of([&] { score_jsonl(f.path, Task::Math, false); }).find(":2: expected one JSON object"),
            std::string::npos);
  const ScoreResult r = score_jsonl(f.path, Task::Math, true);
  EXPECT_EQ(r.count, 2u);
  EXPECT_EQ(r.skipped, 2u);
  ASSERT_EQ(r.skip_messages.size(), 2u);
  EXPECT_EQ(r.skip_messages[0].rfind(f.path + ":2: ", 0), 0u);
  EXPECT_EQ(r.skip_messages[1].rfind(f.path + ":3: ", 0), 0u);
  EXPECT_DOUBLE_EQ(r.metric("accuracy"), 0.5);
  EXPECT_EQ(r.examples[1].line, 5u);
  EXPECT_EQ(r.to_json()["skipped"], 2);

  TempFile all_bad("x\ny\n");
  EXPECT_NE(error_of([&] { score_jsonl(all_bad.path, Task::Math, true); })
                .find("expected at least one valid line, found none (2 skipped"),
            std::string::npos);
}
