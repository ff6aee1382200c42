// The items of the three task families of `flora data synth`, made from the
// world: multiple-choice questions about its facts, arithmetic word problems
// with worked solutions, and short stories and dialogues with a reference
// summary. The corpus uses the same makers for its worked problems, stories and
// dialogues, so that the base model knows their style; synth.cpp keeps every
// item in exactly one place (a split or the corpus).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "synth/world.h"

namespace flora::synth {

// ---- multiple choice ----

// What one question asks: the relation and its subject ("where does Mira live").
// A split owns whole keys, so no fact is asked about in two splits.
struct QuestionKey {
  Relation relation;
  int subject = 0;
  bool operator==(const QuestionKey&) const = default;
};

// Every key the world can ask about (comparisons only where the subject has a
// bigger one and two smaller ones, or the reverse).
std::vector<QuestionKey> question_keys(const World& world);

inline constexpr int kMcqChoices = 3;

struct McqItem {
  QuestionKey key;
  std::string question;
  std::vector<std::string> choices;  // kMcqChoices of them
  int answer = 0;                    // index of the correct choice
  // The facts that make the answer right and the other choices wrong (for a
  // comparison: all three comparisons with the subject); each is stated in the corpus.
  std::vector<Fact> facts;

  // LLM-Adapters' commonsense instruction ("... Answer1: x Answer2: y Answer3: z
  // \n\nAnswer format: answer1/answer2/answer3").
  std::string instruction() const;
  std::string answer_word() const { return "answer" + std::to_string(answer + 1); }  // "answer2"
  std::string output() const { return "the correct answer is " + answer_word(); }
};

// A question about `key` whose correct choice is at `position` (0-based), with
// a phrasing and distractors drawn from rng.
McqItem make_mcq(const World& world, const QuestionKey& key, int position, Rng& rng);

// ---- arithmetic word problems ----

// One operation on the running count, as the problem states it.
struct MathOp {
  enum Kind {
    kStart,        // x = a
    kStartGroups,  // x = a * b (a containers of b)
    kAdd,          // x += a
    kSub,          // x -= a
    kAddGroups,    // x += a * b
    kShare,        // x /= a (shared equally among a friends)
  };
  Kind kind = kStart;
  int64_t a = 0, b = 0;
};

struct MathItem {
  std::string problem;
  std::string solution;  // worked steps "7 + 5 = 12", ending "The answer is N."
  std::vector<MathOp> ops;
  int64_t answer = 0;
  int steps = 0;          // arithmetic operations in the solution (1..3)
  std::string signature;  // the numbers and operations alone: no two items may share one
};

// A problem with `steps` (1..3) operations on small numbers.
MathItem make_math(const World& world, int steps, Rng& rng);

// ---- stories and dialogues ----

struct SummaryItem {
  bool dialogue = false;  // a dialogue ("Name: ..." lines) or a story (document)
  std::string text;
  std::string summary;
};

SummaryItem make_story(const World& world, Rng& rng);
SummaryItem make_dialogue(const World& world, Rng& rng);

}  // namespace flora::synth
