// The Llama 3.x configuration (Hugging Face config.json), validated: anything
// flora does not implement is refused by name instead of being run wrongly.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "util/json.h"

namespace flora {

struct RopeScaling {
  std::string type;  // "" (none) or "llama3"
  double factor = 1.0, low_freq_factor = 1.0, high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct LlamaConfig {
  int64_t hidden_size = 0;        // d
  int64_t intermediate_size = 0;  // f
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-5;
  double rope_theta = 500000.0;
  RopeScaling rope_scaling;
  // A GGUF's rope_freqs tensor (head_dim / 2), as llama.cpp reads it: inverse
  // frequency i is rope_theta^(-2i / head_dim) / factor[i], in place of
  // rope_scaling. Empty for a config.json.
  std::vector<float> rope_freq_factors;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;
  std::string torch_dtype = "bfloat16";

  int64_t q_dim() const { return num_attention_heads * head_dim; }
  int64_t kv_dim() const { return num_key_value_heads * head_dim; }
  // Parameters of the whole model (embedding counted once when tied).
  int64_t parameter_count() const;

  // `origin` names the file in error messages.
  static LlamaConfig from_json(const Json& j, const std::string& origin);
  static LlamaConfig from_file(const std::string& path);
  Json to_json() const;
  // "tiny", "llama-3.2-1b", "llama-3.2-3b"; fails naming the known presets.
  static LlamaConfig preset(const std::string& name);
};

// RoPE inverse frequencies (head_dim / 2), with llama3 scaling applied.
std::vector<double> rope_inverse_frequencies(const LlamaConfig& config);
// cos and sin (head_dim / 2 each) of the RoPE angles of one position. The
// angle pos * inv_freq is formed in double: it reaches 1e5 radians at long
// contexts, where f32 would lose the phase.
void rope_angles(const std::vector<double>& inv_freq, int64_t position, float* cos, float* sin);

}  // namespace flora
