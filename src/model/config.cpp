#include "model/config.h"

#include <cmath>
#include <numbers>

#include "util/error.h"

namespace flora {

int64_t LlamaConfig::parameter_count() const {
  const int64_t d = hidden_size, f = intermediate_size;
  const int64_t per_layer = d * q_dim() + 2 * d * kv_dim() + q_dim() * d + 3 * d * f + 2 * d;
  return vocab_size * d * (tie_word_embeddings ? 1 : 2) + num_hidden_layers * per_layer + d;
}

LlamaConfig LlamaConfig::from_json(const Json& j, const std::string& origin) {
  if (!j.is_object()) fail("{}: expected a JSON object", origin);
  if (auto it = j.find("architectures"); it != j.end()) {
    if (!it->is_array() || it->empty() || *it != Json::array({"LlamaForCausalLM"}))
      fail("{}: architectures: expected [\"LlamaForCausalLM\"], found {}", origin, it->dump());
  }
  const auto model_type = json_get_or<std::string>(j, "model_type", "llama", origin);
  if (model_type != "llama") fail("{}: model_type: expected \"llama\", found \"{}\"", origin, model_type);
  const auto act = json_get_or<std::string>(j, "hidden_act", "silu", origin);
  if (act != "silu") fail("{}: hidden_act: only \"silu\" is supported, found \"{}\"", origin, act);
  if (json_get_or<bool>(j, "attention_bias", false, origin))
    fail("{}: attention_bias: true is not supported (Llama 3 has no biases)", origin);
  if (json_get_or<bool>(j, "mlp_bias", false, origin))
    fail("{}: mlp_bias: true is not supported (Llama 3 has no biases)", origin);

  LlamaConfig c;
  c.hidden_size = json_get<int64_t>(j, "hidden_size", origin);
  c.intermediate_size = json_get<int64_t>(j, "intermediate_size", origin);
  c.num_hidden_layers = json_get<int64_t>(j, "num_hidden_layers", origin);
  c.num_attention_heads = json_get<int64_t>(j, "num_attention_heads", origin);
  c.num_key_value_heads = json_get_or<int64_t>(j, "num_key_value_heads", c.num_attention_heads, origin);
  c.vocab_size = json_get<int64_t>(j, "vocab_size", origin);
  c.max_position_embeddings = json_get_or<int64_t>(j, "max_position_embeddings", 2048, origin);
  c.rms_norm_eps = json_get_or<double>(j, "rms_norm_eps", 1e-6, origin);
  c.rope_theta = json_get_or<double>(j, "rope_theta", 10000.0, origin);
  c.tie_word_embeddings = json_get_or<bool>(j, "tie_word_embeddings", false, origin);
  c.torch_dtype = json_get_or<std::string>(j, "torch_dtype", "float32", origin);

  auto positive = [&](const char* key, int64_t v) {
    if (v <= 0) fail("{}: {}: expected a positive integer, found {}", origin, key, v);
  };
  positive("hidden_size", c.hidden_size);
  positive("intermediate_size", c.intermediate_size);
  positive("num_hidden_layers", c.num_hidden_layers);
  positive("num_attention_heads", c.num_attention_heads);
  positive("num_key_value_heads", c.num_key_value_heads);
  positive("vocab_size", c.vocab_size);
  positive("max_position_embeddings", c.max_position_embeddings);
  if (c.hidden_size % c.num_attention_heads != 0 && !j.contains("head_dim"))
    fail("{}: hidden_size {} is not a multiple of num_attention_heads {} and no head_dim is given", origin,
         c.hidden_size, c.num_attention_heads);
  c.head_dim = json_get_or<int64_t>(j, "head_dim", c.hidden_size / c.num_attention_heads, origin);
  positive("head_dim", c.head_dim);
  if (c.head_dim % 2) fail("{}: head_dim: expected an even number (RoPE rotates pairs), found {}", origin, c.head_dim);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    fail("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", origin, c.num_attention_heads,
         c.num_key_value_heads);
  if (!(c.rms_norm_eps > 0)) fail("{}: rms_norm_eps: expected > 0, found {}", origin, c.rms_norm_eps);
  if (!(c.rope_theta > 0)) fail("{}: rope_theta: expected > 0, found {}", origin, c.rope_theta);

  if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null()) {
    const std::string where = origin + ": rope_scaling";
    const auto type = it->contains("rope_type") ? json_get<std::string>(*it, "rope_type", where)
                                                : json_get_or<std::string>(*it, "type", "", where);
    if (type == "default") {
      // no scaling
    } else if (type == "llama3") {
      c.rope_scaling.type = type;
      c.rope_scaling.factor = json_get<double>(*it, "factor", where);
      c.rope_scaling.low_freq_factor = json_get<double>(*it, "low_freq_factor", where);
      c.rope_scaling.high_freq_factor = json_get<double>(*it, "high_freq_factor", where);
      c.rope_scaling.original_max_position_embeddings =
          json_get<int64_t>(*it, "original_max_position_embeddings", where);
      if (!(c.rope_scaling.factor > 0) || !(c.rope_scaling.high_freq_factor > c.rope_scaling.low_freq_factor) ||
          !(c.rope_scaling.low_freq_factor > 0) || c.rope_scaling.original_max_position_embeddings <= 0)
        fail(
            "{}: expected factor > 0, high_freq_factor > low_freq_factor > 0, original_max_position_embeddings > 0; "
            "found {}",
            where, it->dump());
    } else {
      fail("{}: rope_type \"{}\" is not supported (flora implements \"llama3\" and none)", where, type);
    }
  }

  if (auto it = j.find("bos_token_id"); it != j.end() && it->is_number_integer()) c.bos_token_id = *it;
  if (auto it = j.find("eos_token_id"); it != j.end()) {
    if (it->is_number_integer()) {
      c.eos_token_ids = {it->get<int64_t>()};
    } else if (it->is_array()) {
      for (const auto& e : *it) {
        if (!e.is_number_integer()) fail("{}: eos_token_id: expected integers, found {}", origin, it->dump());
        c.eos_token_ids.push_back(e.get<int64_t>());
      }
    } else if (!it->is_null()) {
      fail("{}: eos_token_id: expected an integer or a list, found {}", origin, it->dump());
    }
  }
  return c;
}

LlamaConfig LlamaConfig::from_file(const std::string& path) { return from_json(read_json_file(path), path); }

Json LlamaConfig::to_json() const {
  Json j;
  j["architectures"] = Json::array({"LlamaForCausalLM"});
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["bos_token_id"] = bos_token_id;
  if (eos_token_ids.size() == 1)
    j["eos_token_id"] = eos_token_ids[0];
  else
    j["eos_token_id"] = eos_token_ids;
  j["head_dim"] = head_dim;
  j["hidden_act"] = "silu";
  j["hidden_size"] = hidden_size;
  j["initializer_range"] = 0.02;
  j["intermediate_size"] = intermediate_size;
  j["max_position_embeddings"] = max_position_embeddings;
  j["mlp_bias"] = false;
  j["model_type"] = "llama";
  j["num_attention_heads"] = num_attention_heads;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_key_value_heads"] = num_key_value_heads;
  j["pretraining_tp"] = 1;
  j["rms_norm_eps"] = rms_norm_eps;
  if (rope_scaling.type.empty()) {
    j["rope_scaling"] = nullptr;
  } else {
    j["rope_scaling"] = {{"factor", rope_scaling.factor},
                         {"high_freq_factor", rope_scaling.high_freq_factor},
                         {"low_freq_factor", rope_scaling.low_freq_factor},
                         {"original_max_position_embeddings", rope_scaling.original_max_position_embeddings},
                         {"rope_type", rope_scaling.type}};
  }
  j["rope_theta"] = rope_theta;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["torch_dtype"] = torch_dtype;
  j["use_cache"] = true;
  j["vocab_size"] = vocab_size;
  return j;
}

LlamaConfig LlamaConfig::preset(const std::string& name) {
  LlamaConfig c;
  // Shared by the Llama 3.2 models (their published config.json files).
  c.vocab_size = 128256;
  c.max_position_embeddings = 131072;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 500000.0;
  c.rope_scaling = {"llama3", 32.0, 1.0, 4.0, 8192};
  c.tie_word_embeddings = true;
  c.bos_token_id = 128000;
  c.eos_token_ids = {128001};
  c.intermediate_size = 8192;
  c.num_key_value_heads = 8;
  if (name == "llama-3.2-1b") {
    c.hidden_size = 2048, c.num_hidden_layers = 16, c.num_attention_heads = 32, c.head_dim = 64;
  } else if (name == "llama-3.2-3b") {
    c.hidden_size = 3072, c.num_hidden_layers = 28, c.num_attention_heads = 24, c.head_dim = 128;
  } else if (name == "tiny") {
    // Small enough for tests; sizes deliberately not multiples of SIMD widths
    // (intermediate 200), and original_max_position_embeddings 64 puts RoPE
    // frequencies in all three llama3 branches at head_dim 16. Ids 379..383 are
    // the tiny tokenizer's special tokens.
    c.hidden_size = 64, c.intermediate_size = 200, c.num_hidden_layers = 2;
    c.num_attention_heads = 4, c.num_key_value_heads = 2, c.head_dim = 16;
    c.vocab_size = 384, c.max_position_embeddings = 2048;
    c.rope_scaling.original_max_position_embeddings = 64;
    c.bos_token_id = 379, c.eos_token_ids = {380};
  } else if (name == "flora-small") {
    // The base model flora pretrains itself on `flora data synth`'s corpus
    // (models/flora-small, docs/results.md): 3.4M parameters, a 1024-token BPE
    // from `flora tokenizer train` (bos 1019, eos 1020), short contexts.
    c.hidden_size = 256, c.intermediate_size = 768, c.num_hidden_layers = 4;
    c.num_attention_heads = 4, c.num_key_value_heads = 2, c.head_dim = 64;
    c.vocab_size = 1024, c.max_position_embeddings = 1024;
    c.rope_theta = 10000.0, c.rope_scaling = RopeScaling{};
    c.bos_token_id = 1019, c.eos_token_ids = {1020};
  } else {
    fail("unknown preset '{}': expected tiny, flora-small, llama-3.2-1b or llama-3.2-3b", name);
  }
  return c;
}

std::vector<double> rope_inverse_frequencies(const LlamaConfig& c) {
  const int64_t half = c.head_dim / 2;
  std::vector<double> inv(half);
  for (int64_t i = 0; i < half; ++i)
    inv[i] = 1.0 / std::pow(c.rope_theta, static_cast<double>(2 * i) / static_cast<double>(c.head_dim));
  if (!c.rope_freq_factors.empty()) {
    FLORA_ASSERT(static_cast<int64_t>(c.rope_freq_factors.size()) == half);
    for (int64_t i = 0; i < half; ++i) inv[i] /= static_cast<double>(c.rope_freq_factors[i]);
  } else if (c.rope_scaling.type == "llama3") {
    // As in Meta's reference (and HF's _compute_llama3_parameters): long
    // wavelengths are slowed by `factor`, short ones kept, the band between
    // interpolated.
    const auto& s = c.rope_scaling;
    const double old_len = static_cast<double>(s.original_max_position_embeddings);
    const double low_wavelen = old_len / s.low_freq_factor, high_wavelen = old_len / s.high_freq_factor;
    for (auto& f : inv) {
      const double wavelen = 2.0 * std::numbers::pi / f;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        f /= s.factor;
      } else {
        const double smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = (1.0 - smooth) * f / s.factor + smooth * f;
      }
    }
  }
  return inv;
}

void rope_angles(const std::vector<double>& inv_freq, int64_t position, float* cos, float* sin) {
  for (size_t j = 0; j < inv_freq.size(); ++j) {
    const double angle = static_cast<double>(position) * inv_freq[j];
    cos[j] = static_cast<float>(std::cos(angle));
    sin[j] = static_cast<float>(std::sin(angle));
  }
}

}  // namespace flora
