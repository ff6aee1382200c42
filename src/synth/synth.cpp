#include "synth/synth.h"

#include <fmt/format.h>

#include <optional>
#include <set>
#include <unordered_set>

#include "synth/corpus.h"
#include "tokenizer/chat_template.h"
#include "util/error.h"
#include "util/file.h"
#include "util/json.h"

namespace flora::synth {

namespace {

using OJson = nlohmann::ordered_json;

// Positions 0, 1, 2 equally often (to one), in a seeded order.
std::vector<int> balanced_positions(int n, Rng& rng) {
  std::vector<int> pos(n);
  for (int i = 0; i < n; ++i) pos[i] = i % kMcqChoices;
  rng.shuffle(pos);
  return pos;
}

Splits<McqItem> make_mcq_splits(const World& w, const Scale& scale, uint64_t seed) {
  Rng rng(seed, "mcq");
  std::vector<QuestionKey> keys = question_keys(w);
  rng.shuffle(keys);
  // Test and valid take one question per key; train needs keys of its own.
  const size_t held_out = static_cast<size_t>(scale.test + scale.valid);
  if (keys.size() < held_out + 50)
    fail("synth scale {}: the world has {} question keys; {} test and {} valid questions need at least {}", scale.name,
         keys.size(), scale.test, scale.valid, held_out + 50);
  Splits<McqItem> s;
  const std::vector<int> test_pos = balanced_positions(scale.test, rng);
  for (int i = 0; i < scale.test; ++i) s.test.push_back(make_mcq(w, keys[i], test_pos[i], rng));
  const std::vector<int> valid_pos = balanced_positions(scale.valid, rng);
  for (int i = 0; i < scale.valid; ++i) s.valid.push_back(make_mcq(w, keys[scale.test + i], valid_pos[i], rng));

  // Train cycles over its keys, a different phrasing or choice set each time round.
  const std::vector<QuestionKey> train_keys(keys.begin() + static_cast<std::ptrdiff_t>(held_out), keys.end());
  const std::vector<int> train_pos = balanced_positions(scale.train, rng);
  std::unordered_set<std::string> seen;
  size_t k = 0;
  for (int i = 0; i < scale.train; ++i) {
    bool placed = false;
    for (size_t attempt = 0; attempt < 20 * train_keys.size() && !placed; ++attempt) {
      McqItem item = make_mcq(w, train_keys[k % train_keys.size()], train_pos[i], rng);
      // A key that keeps repeating itself has run out of variants: move on.
      if (attempt % 20 == 19) ++k;
      if (!seen.insert(item.instruction()).second) continue;
      s.train.push_back(std::move(item));
      placed = true;
    }
    if (!placed) fail("synth: ran out of distinct mcq training questions after {}", s.train.size());
    ++k;
  }
  rng.shuffle(s.train);
  return s;
}

// Draws items until one is new by `key` (the set is shared by the splits and the
// corpus); nullopt when `attempts` draws found none.
template <typename Make, typename Key>
auto draw_unique(Make make, Key key, std::unordered_set<std::string>& used, int attempts)
    -> std::optional<decltype(make())> {
  for (int attempt = 0; attempt < attempts; ++attempt) {
    auto item = make();
    if (used.insert(key(item)).second) return item;
  }
  return std::nullopt;
}

// One, two and three steps as 1 : 2 : 2. One-step problems on small numbers are
// a few thousand in all, and the full scale must not run out of them.
int math_steps(int i) { return i % 5 == 0 ? 1 : i % 5 <= 2 ? 2 : 3; }

std::string math_doc(const MathItem& m) { return m.problem + "\n" + m.solution; }

std::string json_line(const OJson& j) { return j.dump() + "\n"; }

}  // namespace

Scale scale_named(const std::string& name, const char* flag) {
  if (name == "small") return {"small", {100, 12}, 1'500'000, 2000, 200, 200};
  if (name == "full") return {"full", {500, 24}, 8'000'000, 8000, 500, 1000};
  fail("{} {}: expected small or full", flag, name);
}

SynthData make_synth(uint64_t seed, const Scale& scale) {
  SynthData d;
  d.seed = seed;
  d.scale = scale;
  d.world = World::make(seed, scale.world);
  const World& w = d.world;
  d.mcq = make_mcq_splits(w, scale, seed);

  // Held-out items are drawn first, so that the corpus (drawn last) is what
  // gives way to them; each kind has its own stream.
  std::unordered_set<std::string> signatures, texts;
  Rng math_rng(seed, "math");
  auto math = [&](int steps, Rng& rng) {
    return draw_unique([&] { return make_math(w, steps, rng); }, [](const MathItem& m) { return m.signature; },
                       signatures, 1000);
  };
  auto math_split = [&](int n) {
    std::vector<MathItem> out;
    for (int i = 0; i < n; ++i) {
      auto m = math(math_steps(i), math_rng);
      if (!m) fail("synth: ran out of distinct math problems of {} steps after {}", math_steps(i), signatures.size());
      out.push_back(std::move(*m));
    }
    math_rng.shuffle(out);
    return out;
  };
  d.math.test = math_split(scale.test);
  d.math.valid = math_split(scale.valid);
  d.math.train = math_split(scale.train);

  Rng summary_rng(seed, "summary");
  auto text = [&](bool dialogue, Rng& rng) {
    auto item = draw_unique([&] { return dialogue ? make_dialogue(w, rng) : make_story(w, rng); },
                            [](const SummaryItem& s) { return s.text; }, texts, 1000);
    if (!item) fail("synth: ran out of distinct stories and dialogues after {}", texts.size());
    return std::move(*item);
  };
  auto summary_split = [&](int n) {
    std::vector<SummaryItem> out;
    for (int i = 0; i < n; ++i) out.push_back(text(i % 2 == 1, summary_rng));
    summary_rng.shuffle(out);
    return out;
  };
  d.summary.test = summary_split(scale.test);
  d.summary.valid = summary_split(scale.valid);
  d.summary.train = summary_split(scale.train);

  // The corpus: half facts, the rest worked problems, stories and dialogues.
  Rng corpus_rng(seed, "corpus");
  d.corpus = fact_documents(w, scale.corpus_bytes / 2, corpus_rng);
  size_t bytes = 0;
  bool one_step_left = true;
  for (int i = 0; bytes < scale.corpus_bytes * 16 / 100; ++i) {
    // Once the small one-step space is used up, three-step problems instead.
    std::optional<MathItem> m;
    if (math_steps(i) > 1 || one_step_left) m = math(math_steps(i), corpus_rng);
    if (!m) {
      one_step_left = one_step_left && math_steps(i) > 1;
      m = math(3, corpus_rng);
    }
    if (!m) fail("synth: ran out of distinct math problems after {}", signatures.size());
    d.corpus.push_back(math_doc(*m));
    bytes += d.corpus.back().size();
  }
  bytes = 0;
  for (int i = 0; bytes < scale.corpus_bytes * 34 / 100; ++i) {
    d.corpus.push_back(text(i % 2 == 1, corpus_rng).text);
    bytes += d.corpus.back().size();
  }
  corpus_rng.shuffle(d.corpus);
  return d;
}

std::vector<SynthFile> SynthData::files() const {
  std::vector<SynthFile> out;
  auto add = [&](const std::string& path, std::string contents, size_t records) {
    out.push_back({path, std::move(contents), records});
  };
  {
    std::string jsonl, txt;
    for (const std::string& doc : corpus) {
      jsonl += json_line(OJson{{"text", doc}});
      txt += (txt.empty() ? "" : "\n\n") + doc;
    }
    add("corpus.jsonl", std::move(jsonl), corpus.size());
    add("corpus.txt", txt + "\n", corpus.size());
  }
  const char* const kSplitNames[] = {"train", "valid", "test"};
  for (int split = 0; split < 3; ++split) {
    const auto& items = split == 0 ? mcq.train : split == 1 ? mcq.valid : mcq.test;
    std::string s;
    for (const McqItem& m : items)
      s += json_line(
          OJson{{"instruction", m.instruction()}, {"input", ""}, {"output", m.output()}, {"answer", m.answer_word()}});
    add(fmt::format("mcq/{}.jsonl", kSplitNames[split]), std::move(s), items.size());
  }
  for (int split = 0; split < 3; ++split) {
    const auto& items = split == 0 ? math.train : split == 1 ? math.valid : math.test;
    std::string s;
    for (const MathItem& m : items)
      s += json_line(OJson{
          {"instruction", m.problem}, {"input", ""}, {"output", m.solution}, {"answer", std::to_string(m.answer)}});
    add(fmt::format("math/{}.jsonl", kSplitNames[split]), std::move(s), items.size());
  }
  for (int split = 0; split < 3; ++split) {
    const auto& items = split == 0 ? summary.train : split == 1 ? summary.valid : summary.test;
    std::string s;
    for (const SummaryItem& m : items) {
      if (split == 0) {
        s +=
            json_line(OJson{{"instruction", m.dialogue ? kSummarizeDialogueInstruction : kSummarizeDocumentInstruction},
                            {"input", m.text},
                            {"output", m.summary}});
      } else {
        s += json_line(OJson{{m.dialogue ? "dialogue" : "document", m.text}, {"summary", m.summary}});
      }
    }
    add(fmt::format("summary/{}.jsonl", kSplitNames[split]), std::move(s), items.size());
  }

  std::string table;
  for (const SynthFile& f : out) table += fmt::format("| {} | {} | {} |\n", f.path, f.records, f.contents.size());
  const std::string readme = fmt::format(
      R"(# flora synthetic data: seed {seed}, scale {scale}

Written by `flora data synth --out DIR --seed {seed} --scale {scale}`. The same seed and
scale give byte-identical files; another seed gives another world (names, towns, who
lives where, jobs, ages, colours, pets) and other items.

The world: {people} people in {towns} towns, {jobs} jobs, {animals} animals, {things} things
and {colours} colours; {facts} facts. Animals (smallest to biggest), things (lightest to
heaviest) and jobs are a fixed commonsense list; people and towns come from the seed.

| file | records | bytes |
| --- | ---: | ---: |
{table}
## Files

- `corpus.jsonl` (`{{"text"}}`, one document per line) and `corpus.txt` (the same documents,
  separated by blank lines, for `flora tokenizer train`): pretraining text. About half
  states the world's facts in several phrasings (every fact at least once in the
  canonical sentence, e.g. "{example}"), the rest are worked arithmetic
  word problems, short stories and dialogues.
- `mcq/`: multiple-choice questions about the facts in LLM-Adapters' commonsense form
  `{{"instruction": "Please choose the correct answer to the question: ... Answer1: ...
  Answer2: ... Answer3: ...\n\nAnswer format: answer1/answer2/answer3", "input": "",
  "output": "the correct answer is answer2", "answer": "answer2"}}`. The correct answer's
  position is balanced within each split.
- `math/`: word problems of one to three steps in LLM-Adapters' math form
  `{{"instruction": PROBLEM, "input": "", "output": "... The answer is N.", "answer": "N"}}`.
- `summary/`: stories and dialogues with a reference summary. `train.jsonl` is Alpaca
  `{{"instruction": "{dialogue_instruction}" or "{document_instruction}", "input": TEXT,
  "output": SUMMARY}}`; `valid.jsonl` and `test.jsonl` are `{{"dialogue", "summary"}}` and
  `{{"document", "summary"}}` records, as `flora eval --task rouge` reads them.

## Splits

No item is in two splits: each mcq question key (a relation and its subject, such as
"where does {name} live") belongs to one split only (test and valid ask each of their keys
once; train asks its keys in several phrasings and choice sets), every math problem's
arithmetic (its numbers and operations) occurs once in all the files, and every story
and dialogue occurs once. The corpus holds none of the splits' problems, stories or
dialogues, but states every fact that any mcq question rests on.
)",
      fmt::arg("seed", seed), fmt::arg("scale", scale.name), fmt::arg("people", world.people.size()),
      fmt::arg("towns", world.towns.size()), fmt::arg("jobs", world.jobs.size()),
      fmt::arg("animals", world.animals.size()), fmt::arg("things", world.things.size()),
      fmt::arg("colours", world.colours.size()), fmt::arg("facts", world.facts().size()),
      fmt::arg("example", world.sentence(world.facts().front())), fmt::arg("table", table),
      fmt::arg("name", world.people.front().name), fmt::arg("dialogue_instruction", kSummarizeDialogueInstruction),
      fmt::arg("document_instruction", kSummarizeDocumentInstruction));
  add("README.md", readme, 0);
  return out;
}

void write_synth(const std::vector<SynthFile>& files, const std::string& dir) {
  std::set<std::string> made;
  for (const SynthFile& f : files) {
    const std::string path = dir + "/" + f.path;
    const std::string parent = path.substr(0, path.rfind('/'));
    if (made.insert(parent).second) make_directories(parent);
    write_file_atomic(path, f.contents);
  }
}

}  // namespace flora::synth
