// libFuzzer target for training data (src/train/data.h): the input is a JSONL file of
// records in any of the forms (Alpaca, chat, {input_ids, labels}, {text}), read with the
// tiny tokenizer by load_jsonl with the form detected per line, then again with each form
// forced (with skip_bad and a seq_len), and the examples made into a batch. Each call must
// succeed or throw flora::Error. Seeds: tests/fuzz/corpus/fuzz_train_jsonl/ (scripts/fuzz.sh).
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "fuzz_common.h"
#include "train/data.h"
#include "util/error.h"

namespace {

void batch_of(const flora::train::Dataset& data) {
  const std::vector<flora::train::Example>& ex = data.examples;
  std::vector<size_t> idx(std::min<size_t>(ex.size(), 4));
  std::iota(idx.begin(), idx.end(), size_t{0});
  if (idx.empty()) return;
  (void)flora::train::make_batch(ex, idx, 0);
  (void)flora::train::epoch_order(ex.size(), 1, 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace flora::train;
  const flora::Tokenizer& tok = flora_fuzz::tiny_tokenizer();
  const std::string path = flora_fuzz::write_input(data, size, "train.jsonl");
  try {
    batch_of(load_jsonl(path, tok, DataOptions{}));
  } catch (const flora::Error&) {
  }
  for (DataFormat f : {DataFormat::Auto, DataFormat::Alpaca, DataFormat::Chat, DataFormat::Tokenized,
                       DataFormat::Text}) {
    DataOptions o;
    o.skip_bad = true;
    o.seq_len = 8;
    o.format = f;
    try {
      batch_of(load_jsonl(path, tok, o));
    } catch (const flora::Error&) {
    }
  }
  return 0;
}
