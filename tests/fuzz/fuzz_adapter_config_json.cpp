// libFuzzer target for an adapter's adapter_config.json (AdapterConfig::from_json
// after parse_json; PEFT LoRA and the FLoRA format): any input must parse or throw
// flora::Error. Seeds: tests/fuzz/corpus/fuzz_adapter_config_json/ (scripts/fuzz.sh).
#include <cstddef>
#include <cstdint>
#include <string>

#include "adapters/config.h"
#include "util/error.h"
#include "util/json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    (void)flora::AdapterConfig::from_json(flora::parse_json(text, "fuzz"), "fuzz");
  } catch (const flora::Error&) {
  }
  return 0;
}
