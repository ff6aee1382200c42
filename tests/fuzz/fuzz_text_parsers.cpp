// libFuzzer target for the text parsers flora reads from users: tokenizer.json
// (Tokenizer::from_json_text), config.json (LlamaConfig::from_json) and
// adapter_config.json (AdapterConfig::from_json). Any input must either parse
// or throw flora::Error; a parsed tokenizer must then encode and decode the
// same bytes without crashing. The first byte picks the parser.
// Not built by CMake. Build and run from the repository root:
//
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
//     tests/fuzz/fuzz_text_parsers.cpp src/tokenizer/*.cpp src/model/config.cpp \
//     src/adapters/config.cpp src/util/*.cpp -lfmt -lpcre2-8 -o fuzz_text_parsers
//   mkdir -p corpus && cp tests/fixtures/tokenizer/tiny_tokenizer.json corpus/ && \
//     ./fuzz_text_parsers -max_len=65536 corpus
#include <cstddef>
#include <cstdint>
#include <string>

#include "adapters/config.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    switch (data[0] % 3) {
      case 0: {
        const flora::Tokenizer tok = flora::Tokenizer::from_json_text(text, "fuzz");
        const auto ids = tok.encode(text.substr(0, 256), false, true);
        (void)tok.decode(ids);
        break;
      }
      case 1:
        (void)flora::LlamaConfig::from_json(flora::parse_json(text, "fuzz"), "fuzz");
        break;
      default:
        (void)flora::AdapterConfig::from_json(flora::parse_json(text, "fuzz"), "fuzz");
    }
  } catch (const flora::Error&) {
  }
  return 0;
}
