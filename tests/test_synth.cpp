// The synthetic data of `flora data synth` (src/synth/): deterministic per seed,
// splits that share no item, every record readable in its form with its answer
// extractable by the scorer, balanced mcq answer positions, math answers that
// are the problems' arithmetic, and every fact an mcq question rests on stated
// in the corpus.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <unordered_set>
#include <vector>

#include "eval/score.h"
#include "scratch_dir.h"
#include "synth/synth.h"
#include "tokenizer/chat_template.h"
#include "util/file.h"
#include "util/json.h"

using namespace flora;
using namespace flora::synth;

namespace {

const char* const kSplits[] = {"train", "valid", "test"};

// One data set for the whole suite: making it takes a fraction of a second, but
// the checks below need it many times.
class SynthTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_ = new SynthData(make_synth(11, scale_named("small")));
    files_ = new std::map<std::string, std::string>();
    for (const SynthFile& f : data_->files()) (*files_)[f.path] = f.contents;
  }
  static void TearDownTestSuite() {
    delete data_;
    delete files_;
  }
  static const std::string& file(const std::string& path) {
    auto it = files_->find(path);
    if (it == files_->end()) throw std::runtime_error("no file " + path);
    return it->second;
  }
  // The parsed records of a JSONL file of the set.
  static std::vector<Json> records(const std::string& path) {
    std::vector<Json> out;
    const std::string& text = file(path);
    size_t pos = 0;
    while (pos < text.size()) {
      const size_t end = text.find('\n', pos);
      EXPECT_NE(end, std::string::npos) << path << ": the last line has no newline";
      out.push_back(parse_json(text.substr(pos, end - pos), path));
      pos = end + 1;
    }
    return out;
  }
  static std::set<std::string> keys_of(const Json& j) {
    std::set<std::string> k;
    for (const auto& [key, value] : j.items()) {
      k.insert(key);
      EXPECT_TRUE(value.is_string()) << key << " in " << j.dump();
    }
    return k;
  }
  static SynthData* data_;
  static std::map<std::string, std::string>* files_;
};

SynthData* SynthTest::data_ = nullptr;
std::map<std::string, std::string>* SynthTest::files_ = nullptr;

template <typename T>
const std::vector<T>& split_of(const Splits<T>& s, int i) {
  return i == 0 ? s.train : i == 1 ? s.valid : s.test;
}

}  // namespace

TEST_F(SynthTest, SameSeedSameBytesOtherSeedOtherWorld) {
  const std::vector<SynthFile> again = make_synth(11, scale_named("small")).files();
  ASSERT_EQ(again.size(), files_->size());
  for (const SynthFile& f : again) EXPECT_TRUE(f.contents == file(f.path)) << f.path << " differs between two runs";
  const std::vector<SynthFile> other = make_synth(12, scale_named("small")).files();
  for (const SynthFile& f : other) {
    if (f.path != "README.md") {
      EXPECT_FALSE(f.contents == file(f.path)) << f.path << " does not depend on the seed";
    }
  }
}

TEST_F(SynthTest, SizesOfTheSmallScale) {
  for (const char* task : {"mcq", "math", "summary"}) {
    EXPECT_EQ(records(fmt::format("{}/train.jsonl", task)).size(), 2000u) << task;
    EXPECT_EQ(records(fmt::format("{}/valid.jsonl", task)).size(), 200u) << task;
    EXPECT_EQ(records(fmt::format("{}/test.jsonl", task)).size(), 200u) << task;
  }
  const size_t corpus = file("corpus.txt").size();
  EXPECT_GT(corpus, 1'000'000u);
  EXPECT_LT(corpus, 2'000'000u);
  const std::vector<Json> docs = records("corpus.jsonl");
  ASSERT_EQ(docs.size(), data_->corpus.size());
  std::string joined;
  for (const Json& d : docs) {
    EXPECT_EQ(keys_of(d), std::set<std::string>{"text"});
    joined += (joined.empty() ? "" : "\n\n") + d["text"].get<std::string>();
  }
  EXPECT_TRUE(joined + "\n" == file("corpus.txt")) << "corpus.txt is not corpus.jsonl's documents";
  EXPECT_NE(file("README.md").find("seed 11, scale small"), std::string::npos);
  EXPECT_NE(file("README.md").find("| mcq/test.jsonl | 200 |"), std::string::npos);
}

TEST_F(SynthTest, WrittenFilesAreTheGeneratedBytes) {
  const auto dir = std::filesystem::path(FLORA_BINARY_DIR) / "scratch" / "SynthTest" / "written";
  std::filesystem::remove_all(dir);
  const std::vector<SynthFile> files = data_->files();
  write_synth(files, dir.string());
  write_synth(files, dir.string());  // over an earlier set
  for (const SynthFile& f : files) EXPECT_TRUE(read_file((dir / f.path).string()) == f.contents) << f.path;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir))
    EXPECT_EQ(entry.path().string().find(".tmp"), std::string::npos) << "left behind: " << entry.path();
  std::filesystem::remove_all(dir);
}

TEST_F(SynthTest, McqRecordsParseWithBalancedPositions) {
  const std::regex form(
      "Please choose the correct answer to the question: [^\n]+\\?\n\nAnswer1: [^\n]+ Answer2: [^\n]+ Answer3: "
      "[^\n]+\n\nAnswer format: answer1/answer2/answer3");
  for (const char* split : kSplits) {
    const std::string path = fmt::format("mcq/{}.jsonl", split);
    std::map<std::string, int> positions;
    for (const Json& r : records(path)) {
      ASSERT_EQ(keys_of(r), (std::set<std::string>{"instruction", "input", "output", "answer"})) << r.dump();
      const std::string instruction = r["instruction"], answer = r["answer"];
      EXPECT_TRUE(std::regex_match(instruction, form)) << instruction;
      EXPECT_EQ(r["input"], "");
      EXPECT_EQ(r["output"], "the correct answer is " + answer);
      // The scorer reads the gold output as a prediction of the gold answer.
      const eval::Example ex =
          eval::example_from_json(eval::Task::Mcq, Json{{"prediction", r["output"]}, {"answer", answer}});
      const eval::Verdict v = eval::score_example(eval::Task::Mcq, ex);
      EXPECT_TRUE(v.parsed && v.correct) << r.dump();
      EXPECT_EQ(v.expected, answer);
      ++positions[answer];
    }
    ASSERT_EQ(positions.size(), 3u) << path;
    int lo = 1 << 30, hi = 0;
    for (const auto& [answer, n] : positions) lo = std::min(lo, n), hi = std::max(hi, n);
    EXPECT_LE(hi - lo, 1) << path << ": answer positions are not balanced";
  }
}

TEST_F(SynthTest, McqSplitsShareNoQuestionAndNoKey) {
  std::vector<std::set<std::string>> questions(3);
  std::vector<std::vector<QuestionKey>> keys(3);
  for (int s = 0; s < 3; ++s) {
    std::set<std::string> instructions;
    for (const McqItem& m : split_of(data_->mcq, s)) {
      questions[s].insert(m.question);
      keys[s].push_back(m.key);
      EXPECT_TRUE(instructions.insert(m.instruction()).second)
          << "repeated within " << kSplits[s] << ": " << m.instruction();
    }
  }
  // Test and valid ask each of their keys once.
  EXPECT_EQ(questions[1].size(), data_->mcq.valid.size());
  EXPECT_EQ(questions[2].size(), data_->mcq.test.size());
  for (int a = 0; a < 3; ++a)
    for (int b = a + 1; b < 3; ++b) {
      for (const std::string& q : questions[a])
        EXPECT_FALSE(questions[b].count(q)) << q << " is in " << kSplits[a] << " and " << kSplits[b];
      for (const QuestionKey& k : keys[a])
        EXPECT_EQ(std::find(keys[b].begin(), keys[b].end(), k), keys[b].end())
            << "a key of " << kSplits[a] << " is in " << kSplits[b];
    }
}

TEST_F(SynthTest, McqFactsAreStatedInTheCorpus) {
  const World& w = data_->world;
  const std::string& corpus = file("corpus.txt");
  // Every fact once at least, word for word: the mcq facts are among them.
  std::set<std::string> sentences;
  for (const Fact& f : w.facts()) sentences.insert(w.sentence(f));
  for (const std::string& s : sentences) EXPECT_NE(corpus.find(s), std::string::npos) << "not in the corpus: " << s;
  for (int s = 0; s < 3; ++s) {
    for (const McqItem& m : split_of(data_->mcq, s)) {
      ASSERT_FALSE(m.facts.empty());
      const std::string& right = m.choices[m.answer];
      for (const Fact& f : m.facts) {
        const std::string sentence = w.sentence(f);
        EXPECT_TRUE(sentences.count(sentence)) << sentence << " (for " << m.question << ") is not a fact of the world";
      }
      // The right choice is what the first fact says, and no wrong choice is.
      const std::string first = w.sentence(m.facts[0]);
      std::string bare = right.rfind("a ", 0) == 0    ? right.substr(2)
                         : right.rfind("an ", 0) == 0 ? right.substr(3)
                                                      : right;
      if (bare == "none") bare = "no legs";  // "How many legs does a whale have?" "A whale has no legs."
      EXPECT_NE(first.find(bare), std::string::npos) << m.question << " -> " << right << " vs " << first;
      std::set<std::string> distinct(m.choices.begin(), m.choices.end());
      EXPECT_EQ(distinct.size(), m.choices.size()) << m.instruction();
    }
  }
}

TEST_F(SynthTest, MathAnswersAreTheArithmetic) {
  const std::regex equation("(\\d+) ([-+*/]) (\\d+) = (\\d+)");
  const std::regex number("\\d+");
  for (int s = 0; s < 3; ++s) {
    const std::vector<Json> recs = records(fmt::format("math/{}.jsonl", kSplits[s]));
    const std::vector<MathItem>& items = split_of(data_->math, s);
    ASSERT_EQ(recs.size(), items.size());
    std::map<int, int> steps;
    for (size_t i = 0; i < items.size(); ++i) {
      const MathItem& m = items[i];
      const Json& r = recs[i];
      ASSERT_EQ(keys_of(r), (std::set<std::string>{"instruction", "input", "output", "answer"})) << r.dump();
      EXPECT_EQ(r["instruction"], m.problem);
      EXPECT_EQ(r["output"], m.solution);
      // Recompute the answer from the numbers the generator kept.
      int64_t x = 0;
      int ops = 0;
      for (const MathOp& op : m.ops) {
        switch (op.kind) {
          case MathOp::kStart:
            x = op.a;
            break;
          case MathOp::kStartGroups:
            x = op.a * op.b, ops += 1;
            break;
          case MathOp::kAdd:
            x += op.a, ops += 1;
            break;
          case MathOp::kSub:
            x -= op.a, ops += 1;
            break;
          case MathOp::kAddGroups:
            x += op.a * op.b, ops += 2;
            break;
          case MathOp::kShare:
            EXPECT_EQ(x % op.a, 0) << m.problem;
            x /= op.a, ops += 1;
            break;
        }
        EXPECT_GT(x, 0) << m.problem;
      }
      EXPECT_EQ(x, m.answer) << m.problem;
      EXPECT_EQ(r["answer"], std::to_string(x)) << m.problem;
      EXPECT_EQ(ops, m.steps) << m.problem;
      EXPECT_TRUE(m.steps >= 1 && m.steps <= 3) << m.problem;
      ++steps[m.steps];
      // Every number the generator used is in the problem's text.
      std::multiset<int64_t> stated;
      for (auto it = std::sregex_iterator(m.problem.begin(), m.problem.end(), number); it != std::sregex_iterator();
           ++it)
        stated.insert(std::stoll(it->str()));
      for (const MathOp& op : m.ops) {
        EXPECT_TRUE(stated.count(op.a)) << op.a << " not in: " << m.problem;
        if (op.kind == MathOp::kStartGroups || op.kind == MathOp::kAddGroups) {
          EXPECT_TRUE(stated.count(op.b)) << op.b << " not in: " << m.problem;
        }
      }
      // The worked steps: one right equation per step, then "The answer is N."
      int equations = 0;
      for (auto it = std::sregex_iterator(m.solution.begin(), m.solution.end(), equation); it != std::sregex_iterator();
           ++it, ++equations) {
        const int64_t a = std::stoll((*it)[1]), b = std::stoll((*it)[3]), c = std::stoll((*it)[4]);
        const char op = (*it)[2].str()[0];
        const int64_t want = op == '+' ? a + b : op == '-' ? a - b : op == '*' ? a * b : a / b;
        EXPECT_EQ(c, want) << it->str() << " in " << m.solution;
        if (op == '/') {
          EXPECT_EQ(a % b, 0) << m.solution;
        }
      }
      EXPECT_EQ(equations, m.steps) << m.solution;
      EXPECT_TRUE(m.solution.ends_with(fmt::format(" The answer is {}.", x))) << m.solution;
      // The scorer extracts the answer from the gold output.
      const eval::Example ex =
          eval::example_from_json(eval::Task::Math, Json{{"prediction", r["output"]}, {"answer", r["answer"]}});
      const eval::Verdict v = eval::score_example(eval::Task::Math, ex);
      EXPECT_TRUE(v.parsed && v.correct) << r.dump();
      EXPECT_EQ(v.expected, std::to_string(x));
    }
    EXPECT_EQ(steps.size(), 3u) << kSplits[s] << ": not all of one, two and three steps";
  }
}

TEST_F(SynthTest, MathProblemsAreFreshPerSplitAndNotInTheCorpus) {
  std::vector<std::set<std::string>> problems(3), signatures(3);
  for (int s = 0; s < 3; ++s)
    for (const MathItem& m : split_of(data_->math, s)) {
      EXPECT_TRUE(problems[s].insert(m.problem).second) << m.problem;
      EXPECT_TRUE(signatures[s].insert(m.signature).second) << m.problem;
    }
  for (int a = 0; a < 3; ++a)
    for (int b = a + 1; b < 3; ++b)
      for (const std::string& sig : signatures[a])
        EXPECT_FALSE(signatures[b].count(sig)) << "the same arithmetic in " << kSplits[a] << " and " << kSplits[b];
  // Worked problems of the corpus are "PROBLEM\nSOLUTION" documents.
  std::unordered_set<std::string> corpus_lines;
  for (const std::string& doc : data_->corpus) corpus_lines.insert(doc.substr(0, doc.find('\n')));
  for (int s = 0; s < 3; ++s)
    for (const std::string& p : problems[s]) EXPECT_FALSE(corpus_lines.count(p)) << "in the corpus: " << p;
  const std::string& corpus = file("corpus.txt");
  for (const MathItem& m : data_->math.test)
    EXPECT_EQ(corpus.find(m.problem), std::string::npos) << "in the corpus: " << m.problem;
}

TEST_F(SynthTest, SummaryRecordsParseAndStoriesAreHeldOut) {
  std::vector<std::set<std::string>> texts(3);
  const std::regex dialogue_lines("([A-Z][a-z]+: [^\n]+\n?)+");
  for (int s = 0; s < 3; ++s) {
    int dialogues = 0, documents = 0;
    for (const Json& r : records(fmt::format("summary/{}.jsonl", kSplits[s]))) {
      std::string text, summary;
      bool dialogue = false;
      if (s == 0) {
        ASSERT_EQ(keys_of(r), (std::set<std::string>{"instruction", "input", "output"})) << r.dump();
        const std::string instruction = r["instruction"];
        dialogue = instruction == kSummarizeDialogueInstruction;
        EXPECT_TRUE(dialogue || instruction == kSummarizeDocumentInstruction) << instruction;
        text = r["input"], summary = r["output"];
      } else {
        dialogue = r.contains("dialogue");
        ASSERT_EQ(keys_of(r), (std::set<std::string>{dialogue ? "dialogue" : "document", "summary"})) << r.dump();
        text = r[dialogue ? "dialogue" : "document"], summary = r["summary"];
      }
      (dialogue ? dialogues : documents) += 1;
      EXPECT_FALSE(summary.empty());
      EXPECT_LT(summary.size(), text.size()) << text;
      // A dialogue is "Name: text" lines by two people; a story is one paragraph.
      if (dialogue) {
        EXPECT_TRUE(std::regex_match(text, dialogue_lines)) << text;
      } else {
        EXPECT_EQ(text.find('\n'), std::string::npos) << text;
      }
      const eval::Example ex =
          eval::example_from_json(eval::Task::Rouge, Json{{"prediction", summary}, {"reference", summary}});
      EXPECT_DOUBLE_EQ(eval::score_example(eval::Task::Rouge, ex).rouge.rougeL.f1, 1.0);
      EXPECT_TRUE(texts[s].insert(text).second) << "repeated within " << kSplits[s] << ": " << text;
    }
    EXPECT_EQ(dialogues, documents) << kSplits[s];
  }
  for (int a = 0; a < 3; ++a)
    for (int b = a + 1; b < 3; ++b)
      for (const std::string& t : texts[a]) EXPECT_FALSE(texts[b].count(t)) << kSplits[a] << " and " << kSplits[b];
  const std::unordered_set<std::string> docs(data_->corpus.begin(), data_->corpus.end());
  for (int s = 0; s < 3; ++s)
    for (const std::string& t : texts[s]) EXPECT_FALSE(docs.count(t)) << "in the corpus: " << t;
  const std::string& corpus = file("corpus.txt");
  for (const std::string& t : texts[2]) EXPECT_EQ(corpus.find(t), std::string::npos) << "in the corpus: " << t;
}

TEST(Synth, ScalesAndTheirErrors) {
  EXPECT_EQ(scale_named("small").train, 2000);
  EXPECT_GT(scale_named("full").train, scale_named("small").train);
  EXPECT_EQ(error_of([] { scale_named("huge"); }), "--scale huge: expected small or full");
}
