// libFuzzer target for a model's config.json (LlamaConfig::from_json after
// parse_json): any input must parse or throw flora::Error.
// Seeds: tests/fuzz/corpus/fuzz_config_json/ (scripts/fuzz.sh runs it).
#include <cstddef>
#include <cstdint>
#include <string>

#include "model/config.h"
#include "util/error.h"
#include "util/json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    (void)flora::LlamaConfig::from_json(flora::parse_json(text, "fuzz"), "fuzz");
  } catch (const flora::Error&) {
  }
  return 0;
}
