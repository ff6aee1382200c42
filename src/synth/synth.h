// `flora data synth`: the whole synthetic data set of one seed and scale, in
// memory (for tests) and as files.
//
// Files under the output directory:
//   corpus.jsonl, corpus.txt      pretraining text ({"text"} per document; the same
//                                 documents separated by blank lines)
//   mcq/{train,valid,test}.jsonl  {"instruction", "input", "output", "answer"} (LLM-Adapters commonsense)
//   math/{train,valid,test}.jsonl {"instruction", "input", "output", "answer"} (LLM-Adapters math)
//   summary/train.jsonl           {"instruction", "input", "output"} (Alpaca)
//   summary/{valid,test}.jsonl    {"dialogue", "summary"} or {"document", "summary"}
//   README.md                     what the files are, their sizes, the seed
//
// Item ownership: every mcq question key, math problem (by its arithmetic),
// story and dialogue belongs to exactly one split, and the corpus has none of
// the splits' problems, stories or dialogues; it does state every fact the mcq
// questions ask about.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "synth/tasks.h"
#include "synth/world.h"

namespace flora::synth {

struct Scale {
  std::string name;
  WorldSize world;
  size_t corpus_bytes = 0;             // about; facts, worked problems, stories and dialogues together
  int train = 0, valid = 0, test = 0;  // records per task
};

// "small" (tests, demo) or "full" (studies); fails naming `flag` otherwise.
Scale scale_named(const std::string& name, const char* flag = "--scale");

template <typename T>
struct Splits {
  std::vector<T> train, valid, test;
};

struct SynthFile {
  std::string path;  // relative to the output directory
  std::string contents;
  size_t records = 0;  // JSONL lines, documents for corpus.txt, 0 for README.md
};

struct SynthData {
  uint64_t seed = 0;
  Scale scale;
  World world;
  std::vector<std::string> corpus;  // documents
  Splits<McqItem> mcq;
  Splits<MathItem> math;
  Splits<SummaryItem> summary;

  // Every file, README.md last.
  std::vector<SynthFile> files() const;
};

SynthData make_synth(uint64_t seed, const Scale& scale);

// Writes the files under `dir` (created if needed), each atomically, README.md
// last: its presence means the set is complete.
void write_synth(const std::vector<SynthFile>& files, const std::string& dir);

}  // namespace flora::synth
