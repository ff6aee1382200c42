// config.json: the real Llama 3.2 configurations parse to the presets, and
// anything flora does not implement or cannot read is one flora::Error that
// names the file and the key.
#include <gtest/gtest.h>

#include <string>

#include "model/config.h"
#include "util/error.h"
#include "util/json.h"

namespace flora {
namespace {

// The published config.json of Llama-3.2-1B, trimmed to the keys flora reads.
const char* kLlama32_1B = R"({"architectures": ["LlamaForCausalLM"], "bos_token_id": 128000, "eos_token_id": 128001,
  "head_dim": 64, "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 8192,
  "max_position_embeddings": 131072, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16,
  "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0,
  "low_freq_factor": 1.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16", "vocab_size": 128256})";

std::string error_of(const std::string& text) {
  try {
    LlamaConfig::from_json(parse_json(text, "cfg.json"), "cfg.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string with(const std::string& key, const std::string& value) {
  Json j = parse_json(kLlama32_1B, "x");
  j[key] = parse_json(value, "value");
  return j.dump();
}

TEST(Config, RealOneBillionConfigEqualsPreset) {
  const LlamaConfig c = LlamaConfig::from_json(parse_json(kLlama32_1B, "cfg.json"), "cfg.json");
  const LlamaConfig p = LlamaConfig::preset("llama-3.2-1b");
  EXPECT_EQ(c.to_json(), p.to_json());
  EXPECT_EQ(c.parameter_count(), 1235814400);  // Llama-3.2-1B's published parameter count
}

TEST(Config, RefusesWhatFloraDoesNotImplement) {
  EXPECT_NE(error_of(with("model_type", "\"mistral\"")).find("model_type"), std::string::npos);
  EXPECT_NE(error_of(with("architectures", "[\"MistralForCausalLM\"]")).find("architectures"), std::string::npos);
  EXPECT_NE(error_of(with("rope_scaling", R"({"rope_type": "yarn", "factor": 4.0})")).find("yarn"), std::string::npos);
  EXPECT_NE(error_of(with("attention_bias", "true")).find("attention_bias"), std::string::npos);
  EXPECT_NE(error_of(with("num_key_value_heads", "5")).find("multiple"), std::string::npos);
}

TEST(Config, BadNumbersAreErrorsNotCrashes) {
  // Found by tests/fuzz/fuzz_text_parsers.cpp: 1e405 overflowed inside the JSON
  // parser, and a non-integer where an integer belongs converted silently.
  EXPECT_NE(error_of(with("hidden_size", "2.5")).find("hidden_size"), std::string::npos);
  EXPECT_NE(error_of(with("hidden_size", "1e300")).find("hidden_size"), std::string::npos);
  EXPECT_NE(error_of(with("num_hidden_layers", "-3")).find("num_hidden_layers"), std::string::npos);
  const std::string overflow = std::string(kLlama32_1B).replace(std::string(kLlama32_1B).find("1e-05"), 5, "1e405");
  EXPECT_NE(error_of(overflow).find("cfg.json"), std::string::npos);
  EXPECT_NE(error_of("{\"hidden_size\": 64").find("invalid JSON"), std::string::npos);
  EXPECT_NE(error_of(with("vocab_size", "\"big\"")).find("vocab_size"), std::string::npos);
}

}  // namespace
}  // namespace flora
