// libFuzzer target for tokenizer.json (Tokenizer::from_json_text): any input must
// parse or throw flora::Error; a tokenizer that parsed must then encode (with and
// without special tokens) and decode its own text without crashing.
// Seeds: tests/fuzz/corpus/fuzz_tokenizer_json/ (scripts/fuzz.sh runs it).
#include <cstddef>
#include <cstdint>
#include <string>

#include "tokenizer/tokenizer.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const flora::Tokenizer tok = flora::Tokenizer::from_json_text(text, "fuzz");
    const std::string sample = text.substr(0, 256);
    for (bool special : {false, true}) {
      const auto ids = tok.encode(sample, false, special);
      (void)tok.decode(ids);
      (void)tok.decode(ids, true);
    }
    for (int32_t id = 0; id < tok.vocab_size() && id < 64; ++id) (void)tok.token_bytes(id);
  } catch (const flora::Error&) {
  }
  return 0;
}
