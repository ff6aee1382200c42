#include "model/gguf_llama.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>

#include "model/weights.h"
#include "ops/formats.h"
#include "ops/quant.h"
#include "util/error.h"
#include "util/file.h"
#include "util/json.h"
#include "util/threads.h"

namespace flora {

namespace fs = std::filesystem;

namespace {

// Tensor names: GGUF's and Hugging Face's, per layer ("blk.N." / "model.layers.N.") and global.
constexpr std::array<std::pair<std::string_view, std::string_view>, 9> kLayerNames = {{
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
}};
constexpr std::array<std::pair<std::string_view, std::string_view>, 4> kGlobalNames = {{
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
    {"rope_freqs.weight", "rope_freqs.weight"},
}};

// The digits of a layer index at the start of s, and what follows the dot after them.
std::optional<std::pair<std::string_view, std::string_view>> split_layer(std::string_view s) {
  size_t n = 0;
  while (n < s.size() && s[n] >= '0' && s[n] <= '9') ++n;
  if (n == 0 || n > 9 || n >= s.size() || s[n] != '.') return std::nullopt;
  return std::pair{s.substr(0, n), s.substr(n + 1)};
}

// GGUF token types (llama.cpp's llama_token_type).
constexpr int32_t kTokenNormal = 1, kTokenControl = 3, kTokenUserDefined = 4, kTokenUnused = 5;

// Llama 3's pre-tokenizer, as its tokenizer.json spells it; llama.cpp names it llama-bpe.
constexpr const char* kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";

Json llama3_pre_tokenizer() {
  return {
      {"type", "Sequence"},
      {"pretokenizers",
       Json::array(
           {{{"type", "Split"}, {"pattern", {{"Regex", kLlama3Regex}}}, {"behavior", "Isolated"}, {"invert", false}},
            {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}})}};
}

}  // namespace

bool is_gguf_path(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

std::optional<std::string> hf_tensor_name(std::string_view name) {
  for (const auto& [g, h] : kGlobalNames)
    if (name == g) return std::string(h);
  constexpr std::string_view kBlk = "blk.";
  if (name.substr(0, kBlk.size()) != kBlk) return std::nullopt;
  const auto layer = split_layer(name.substr(kBlk.size()));
  if (!layer) return std::nullopt;
  for (const auto& [g, h] : kLayerNames)
    if (layer->second == g) return fmt::format("model.layers.{}.{}", layer->first, h);
  return std::nullopt;
}

std::string gguf_tensor_name(std::string_view name) {
  for (const auto& [g, h] : kGlobalNames)
    if (name == h) return std::string(g);
  constexpr std::string_view kLayers = "model.layers.";
  if (name.substr(0, kLayers.size()) == kLayers)
    if (const auto layer = split_layer(name.substr(kLayers.size())))
      for (const auto& [g, h] : kLayerNames)
        if (layer->second == h) return fmt::format("blk.{}.{}", layer->first, g);
  fail("GGUF: no GGUF name for the tensor '{}'", name);
}

int64_t hf_row_of_gguf_row(int64_t row, int64_t head_dim) {
  const int64_t head = row / head_dim, r = row % head_dim;
  return head * head_dim + (r % 2) * (head_dim / 2) + r / 2;
}

int64_t gguf_row_of_hf_row(int64_t row, int64_t head_dim) {
  const int64_t head = row / head_dim, r = row % head_dim, half = head_dim / 2;
  return head * head_dim + (r % half) * 2 + r / half;
}

LlamaConfig llama_config_from_gguf(const GgufFile& f) {
  const std::string& path = f.path();
  const auto arch = f.get_string("general.architecture");
  if (!arch) fail("{}: metadata key 'general.architecture' is missing (every GGUF model has it)", path);
  if (*arch != "llama") fail("{}: general.architecture is '{}': flora runs Llama models ('llama')", path, *arch);
  auto need = [&](const char* key) {
    const auto v = f.get_uint(key);
    if (!v) fail("{}: metadata key '{}' is missing (llama.cpp's converter always writes it)", path, key);
    return static_cast<int64_t>(*v);
  };
  // The configuration as config.json would give it, so that one function checks both.
  Json j;
  j["hidden_size"] = need("llama.embedding_length");
  j["intermediate_size"] = need("llama.feed_forward_length");
  j["num_hidden_layers"] = need("llama.block_count");
  j["num_attention_heads"] = need("llama.attention.head_count");
  j["num_key_value_heads"] = static_cast<int64_t>(
      f.get_uint("llama.attention.head_count_kv").value_or(static_cast<uint64_t>(need("llama.attention.head_count"))));
  j["max_position_embeddings"] = need("llama.context_length");
  const auto eps = f.get_float("llama.attention.layer_norm_rms_epsilon");
  if (!eps) fail("{}: metadata key 'llama.attention.layer_norm_rms_epsilon' is missing", path);
  j["rms_norm_eps"] = *eps;
  j["rope_theta"] = f.get_float("llama.rope.freq_base").value_or(10000.0);
  const auto key_length = f.get_uint("llama.attention.key_length");
  const auto value_length = f.get_uint("llama.attention.value_length");
  if (key_length && value_length && *key_length != *value_length)
    fail("{}: llama.attention.key_length {} and value_length {} differ: Llama heads have one size", path, *key_length,
         *value_length);
  if (const auto dims = f.get_uint("llama.rope.dimension_count"); dims && key_length && *dims != *key_length)
    fail("{}: llama.rope.dimension_count {} is not the head size {}: partial RoPE is not Llama's", path, *dims,
         *key_length);
  if (key_length) j["head_dim"] = static_cast<int64_t>(*key_length);
  if (const auto scaling = f.get_string("llama.rope.scaling.type"); scaling && *scaling != "none")
    fail("{}: llama.rope.scaling.type '{}': flora implements llama3's RoPE (the rope_freqs tensor), not this", path,
         *scaling);
  const GgufTensor* embed = f.find_tensor("token_embd.weight");
  if (!embed) fail("{}: tensor 'token_embd.weight' not found (every Llama GGUF has it)", path);
  if (embed->ne.size() != 2)
    fail("{}: tensor 'token_embd.weight': expected 2 dimensions, found {}", path, embed->ne.size());
  j["vocab_size"] = f.get_uint("llama.vocab_size").value_or(static_cast<uint64_t>(embed->ne[1]));
  j["tie_word_embeddings"] = f.find_tensor("output.weight") == nullptr;
  j["torch_dtype"] = embed->type == static_cast<uint32_t>(GgmlType::F32)   ? "float32"
                     : embed->type == static_cast<uint32_t>(GgmlType::F16) ? "float16"
                                                                           : "bfloat16";
  if (const auto bos = f.get_uint("tokenizer.ggml.bos_token_id")) j["bos_token_id"] = *bos;
  Json eos = Json::array();
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"})
    if (const auto id = f.get_uint(key); id && std::find(eos.begin(), eos.end(), Json(*id)) == eos.end())
      eos.push_back(*id);
  if (!eos.empty()) j["eos_token_id"] = eos;
  LlamaConfig c = LlamaConfig::from_json(j, path + " (llama.* metadata)");

  if (const GgufTensor* t = f.find_tensor("rope_freqs.weight")) {
    if (t->type != static_cast<uint32_t>(GgmlType::F32) || t->ne.size() != 1 || t->ne[0] != c.head_dim / 2)
      fail("{}: tensor 'rope_freqs.weight': expected F32 [{}] (the RoPE factors of a head), found {} {}", path,
           c.head_dim / 2, ggml_type_name(t->type), fmt::join(t->ne, "x"));
    c.rope_freq_factors.resize(static_cast<size_t>(t->ne[0]));
    std::memcpy(c.rope_freq_factors.data(), t->data, t->nbytes);
    for (size_t i = 0; i < c.rope_freq_factors.size(); ++i)
      if (!(c.rope_freq_factors[i] > 0) || !std::isfinite(c.rope_freq_factors[i]))
        fail("{}: tensor 'rope_freqs.weight': element {} is {}: expected a positive factor", path, i,
             c.rope_freq_factors[i]);
  }
  return c;
}

Tokenizer tokenizer_from_gguf(const GgufFile& f) {
  const std::string& path = f.path();
  const std::string origin = path + " (tokenizer.ggml.*)";
  const auto model = f.get_string("tokenizer.ggml.model");
  if (!model) fail("{}: metadata key 'tokenizer.ggml.model' is missing: the file carries no tokenizer", path);
  if (*model != "gpt2")
    fail("{}: tokenizer.ggml.model '{}': flora reads byte-level BPE tokenizers ('gpt2', as Llama 3's)", path, *model);
  const std::string pre = f.get_string("tokenizer.ggml.pre").value_or("default");
  if (pre != "llama-bpe" && pre != "llama3" && pre != "llama-v3")
    fail("{}: tokenizer.ggml.pre '{}': flora implements Llama 3's pre-tokenizer ('llama-bpe')", path, pre);
  const std::vector<std::string>* tokens = f.get_strings("tokenizer.ggml.tokens");
  if (!tokens) fail("{}: metadata key 'tokenizer.ggml.tokens' is missing", path);
  const GgufValue* types = f.find("tokenizer.ggml.token_type");
  if (types && (!types->array || types->ints.size() != tokens->size()))
    fail("{}: tokenizer.ggml.token_type: expected an array of {} integers (one per token), found {} of {}", path,
         tokens->size(), types->type_name(), types->size());
  const std::vector<std::string>* merges = f.get_strings("tokenizer.ggml.merges");
  if (!merges) fail("{}: metadata key 'tokenizer.ggml.merges' is missing (a BPE tokenizer has merges)", path);

  Json vocab = Json::object(), added = Json::array();
  for (size_t id = 0; id < tokens->size(); ++id) {
    const int64_t type = types ? types->ints[id] : kTokenNormal;
    const std::string& token = (*tokens)[id];
    if (type == kTokenNormal) {
      vocab[token] = id;
    } else if (type == kTokenControl || type == kTokenUserDefined) {
      added.push_back({{"id", id},
                       {"content", token},
                       {"single_word", false},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"normalized", false},
                       {"special", type == kTokenControl}});
    } else if (type != kTokenUnused) {
      fail(
          "{}: tokenizer.ggml.token_type[{}] is {}: a byte-level BPE has normal (1), control (3), user-defined "
          "(4) and unused (5) tokens",
          path, id, type);
    }
  }
  Json root = {
      {"version", "1.0"},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer", llama3_pre_tokenizer()},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", true},
        {"vocab", vocab},
        {"merges", *merges}}}};
  const auto bos = f.get_uint("tokenizer.ggml.bos_token_id");
  if (bos && f.get_bool("tokenizer.ggml.add_bos_token").value_or(true)) {
    if (*bos >= tokens->size())
      fail("{}: tokenizer.ggml.bos_token_id {} is not a token (there are {})", path, *bos, tokens->size());
    const std::string& name = (*tokens)[*bos];
    root["post_processor"] = {{"type", "TemplateProcessing"},
                              {"single", Json::array({{{"SpecialToken", {{"id", name}, {"type_id", 0}}}},
                                                      {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
                              {"special_tokens", {{name, {{"id", name}, {"ids", {*bos}}, {"tokens", {name}}}}}}};
  }
  return Tokenizer::from_json_text(root.dump(), origin);
}

Tokenizer load_model_tokenizer(const std::string& model_path) {
  if (is_gguf_path(model_path)) return tokenizer_from_gguf(GgufFile(model_path));
  const std::string path = model_path + "/tokenizer.json";
  if (!fs::exists(path)) fail("{}: no tokenizer.json in the model directory", model_path);
  return Tokenizer::from_file(path);
}

LlamaConfig load_model_config(const std::string& model_path) {
  if (is_gguf_path(model_path)) return llama_config_from_gguf(GgufFile(model_path));
  return LlamaConfig::from_file(model_path + "/config.json");
}

// ---- writing ----

std::optional<GgufOutType> parse_gguf_out_type(std::string_view name) {
  if (name == "f32") return GgufOutType::kF32;
  if (name == "f16") return GgufOutType::kF16;
  if (name == "bf16") return GgufOutType::kBF16;
  if (name == "q8_0") return GgufOutType::kQ8_0;
  if (name == "q4_0") return GgufOutType::kQ4_0;
  if (name == "q4_k_m") return GgufOutType::kQ4_K_M;
  return std::nullopt;
}

std::string gguf_out_type_names() { return "f32, f16, bf16, q8_0, q4_0 or q4_k_m"; }

DType gguf_matrix_type(GgufOutType type, const std::string& hf_name, int64_t cols, int64_t layer, int64_t layers,
                       bool tied) {
  auto ends_with = [&](std::string_view tail) {
    return hf_name.size() >= tail.size() && hf_name.compare(hf_name.size() - tail.size(), tail.size(), tail) == 0;
  };
  const bool output = hf_name == "lm_head.weight" || (tied && hf_name == "model.embed_tokens.weight");
  // llama.cpp's use_more_bits(i, n).
  const bool more_bits = layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2;
  DType t = DType::F32;
  switch (type) {
    case GgufOutType::kF32:
      return DType::F32;
    case GgufOutType::kF16:
      return DType::F16;
    case GgufOutType::kBF16:
      return DType::BF16;
    case GgufOutType::kQ8_0:
      t = DType::Q8_0;
      break;
    case GgufOutType::kQ4_0:
      t = output ? DType::Q6_K : DType::Q4_0;
      break;
    case GgufOutType::kQ4_K_M:
      t = output || ((ends_with("self_attn.v_proj.weight") || ends_with("mlp.down_proj.weight")) && more_bits)
              ? DType::Q6_K
              : DType::Q4_K;
      break;
  }
  // The fallbacks for rows that are not whole blocks.
  const auto fits = [cols](DType d) { return cols % find_weight_format(d)->block_elems == 0; };
  if (!fits(t)) t = t == DType::Q6_K ? DType::Q8_0 : t == DType::Q4_K ? DType::Q4_0 : t;
  if (!fits(t)) t = DType::F16;
  return t;
}

namespace {

// llama.cpp's llama_ftype of each output type (general.file_type).
uint32_t file_type_of(GgufOutType t) {
  switch (t) {
    case GgufOutType::kF32:
      return 0;
    case GgufOutType::kF16:
      return 1;
    case GgufOutType::kBF16:
      return 32;
    case GgufOutType::kQ8_0:
      return 7;
    case GgufOutType::kQ4_0:
      return 2;
    case GgufOutType::kQ4_K_M:
      return 15;
  }
  return 0;
}

// A matrix in `dtype`, rows reordered by `row_of` (GGUF row -> HF row), as bytes:
// each row widened to f32 and written in `dtype` by the one codec of every format (ops/quant.h).
// Rows are converted independently, so the pool's threads split them and the
// bytes do not depend on the thread count.
std::vector<uint8_t> convert_matrix(const MatrixRef& m, DType dtype, const std::function<int64_t(int64_t)>& row_of,
                                    ThreadPool& pool) {
  const size_t row_bytes = quantized_bytes(dtype, m.cols);
  std::vector<uint8_t> out(static_cast<size_t>(m.rows) * row_bytes);
  pool.parallel_for(m.rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> row(static_cast<size_t>(m.cols));
    for (int64_t g = begin; g < end; ++g) {
      embedding_row(m, row_of ? row_of(g) : g, row.data());  // any matrix's row, widened
      quantize_row(dtype, row.data(), m.cols, out.data() + static_cast<size_t>(g) * row_bytes);
    }
  });
  return out;
}

}  // namespace

std::vector<float> llama3_rope_factors(const LlamaConfig& c) {
  if (c.rope_scaling.type != "llama3" && c.rope_freq_factors.empty()) return {};
  LlamaConfig plain = c;
  plain.rope_scaling = RopeScaling{};
  plain.rope_freq_factors.clear();
  const std::vector<double> scaled = rope_inverse_frequencies(c), unscaled = rope_inverse_frequencies(plain);
  std::vector<float> factors(scaled.size());
  for (size_t i = 0; i < scaled.size(); ++i) factors[i] = static_cast<float>(unscaled[i] / scaled[i]);
  return factors;
}

std::vector<std::pair<std::string, GgufValue>> gguf_tokenizer_metadata(const std::string& text,
                                                                       const std::string& origin,
                                                                       const LlamaConfig& c) {
  // Refused here, not by llama.cpp or a later flora, if flora cannot read it.
  const Tokenizer tok = Tokenizer::from_json_text(text, origin);
  const Json tj = Json::parse(text);
  if (!(tj.contains("pre_tokenizer") && tj["pre_tokenizer"] == llama3_pre_tokenizer()))
    fail("{}: pre_tokenizer: only Llama 3's can be written to GGUF (tokenizer.ggml.pre llama-bpe)", origin);
  std::vector<std::string> tokens(static_cast<size_t>(c.vocab_size));
  std::vector<int32_t> types(static_cast<size_t>(c.vocab_size), kTokenUnused);
  auto place = [&](int64_t id, const std::string& token, int32_t t) {
    if (id < 0 || id >= c.vocab_size)
      fail("{}: token '{}' has id {}, outside the model's vocabulary of {} (config.json vocab_size)", origin, token, id,
           c.vocab_size);
    tokens[static_cast<size_t>(id)] = token;
    types[static_cast<size_t>(id)] = t;
  };
  for (const auto& [token, id] : tj["model"]["vocab"].items()) place(id.get<int64_t>(), token, kTokenNormal);
  for (const Json& a : tj.value("added_tokens", Json::array()))
    place(a["id"].get<int64_t>(), a["content"].get<std::string>(),
          a.value("special", false) ? kTokenControl : kTokenUserDefined);
  for (size_t id = 0; id < tokens.size(); ++id)
    if (types[id] == kTokenUnused) tokens[id] = fmt::format("[PAD{}]", id);
  // GGUF spells a merge "left right": byte-level tokens hold no space (it is Ġ).
  std::vector<std::string> merges;
  for (const Json& m : tj["model"]["merges"])
    merges.push_back(m.is_string() ? m.get<std::string>() : m[0].get<std::string>() + " " + m[1].get<std::string>());

  std::vector<std::pair<std::string, GgufValue>> kv = {
      {"tokenizer.ggml.model", GgufValue::string("gpt2")},
      {"tokenizer.ggml.pre", GgufValue::string("llama-bpe")},
      {"tokenizer.ggml.tokens", GgufValue::string_array(std::move(tokens))},
      {"tokenizer.ggml.token_type", GgufValue::i32_array(types)},
      {"tokenizer.ggml.merges", GgufValue::string_array(std::move(merges))},
  };
  if (tok.bos_id()) {
    kv.emplace_back("tokenizer.ggml.bos_token_id", GgufValue::u32(static_cast<uint32_t>(*tok.bos_id())));
    kv.emplace_back("tokenizer.ggml.add_bos_token", GgufValue::boolean(true));
  }
  if (!c.eos_token_ids.empty())
    kv.emplace_back("tokenizer.ggml.eos_token_id", GgufValue::u32(static_cast<uint32_t>(c.eos_token_ids[0])));
  // GGUF has one eos id; the other end tokens of config.json's list go where
  // llama.cpp looks for them (end of turn, end of message), those being the
  // only other ends Llama 3 has.
  for (size_t i = 1; i < c.eos_token_ids.size(); ++i)
    for (const auto& [token, key] : {std::pair{"<|eot_id|>", "tokenizer.ggml.eot_token_id"},
                                     std::pair{"<|eom_id|>", "tokenizer.ggml.eom_token_id"}})
      if (tok.token_id(token) == c.eos_token_ids[i])
        kv.emplace_back(key, GgufValue::u32(static_cast<uint32_t>(c.eos_token_ids[i])));
  return kv;
}

void write_llama_gguf(const std::string& model_dir, const std::string& out_path, GgufOutType type,
                      const std::function<void(int64_t, int64_t, const std::string&)>& progress, int threads) {
  const auto model = LlamaModel::load(model_dir, ModelLoadOptions{true, false});
  ThreadPool pool(threads);
  const LlamaConfig& c = model->config();
  const std::string tok_path = model_dir + "/tokenizer.json";
  if (!fs::exists(tok_path)) fail("{}: no tokenizer.json: a GGUF carries its tokenizer", model_dir);
  std::vector<std::pair<std::string, GgufValue>> kv = {
      {"general.architecture", GgufValue::string("llama")},
      {"general.name", GgufValue::string(fs::path(model_dir).lexically_normal().filename().string())},
      {"general.file_type", GgufValue::u32(file_type_of(type))},
      {"llama.block_count", GgufValue::u32(static_cast<uint32_t>(c.num_hidden_layers))},
      {"llama.context_length", GgufValue::u32(static_cast<uint32_t>(c.max_position_embeddings))},
      {"llama.embedding_length", GgufValue::u32(static_cast<uint32_t>(c.hidden_size))},
      {"llama.feed_forward_length", GgufValue::u32(static_cast<uint32_t>(c.intermediate_size))},
      {"llama.attention.head_count", GgufValue::u32(static_cast<uint32_t>(c.num_attention_heads))},
      {"llama.attention.head_count_kv", GgufValue::u32(static_cast<uint32_t>(c.num_key_value_heads))},
      {"llama.rope.freq_base", GgufValue::f32(static_cast<float>(c.rope_theta))},
      {"llama.attention.layer_norm_rms_epsilon", GgufValue::f32(static_cast<float>(c.rms_norm_eps))},
      {"llama.attention.key_length", GgufValue::u32(static_cast<uint32_t>(c.head_dim))},
      {"llama.attention.value_length", GgufValue::u32(static_cast<uint32_t>(c.head_dim))},
      {"llama.rope.dimension_count", GgufValue::u32(static_cast<uint32_t>(c.head_dim))},
      {"llama.vocab_size", GgufValue::u32(static_cast<uint32_t>(c.vocab_size))},
  };
  for (auto& e : gguf_tokenizer_metadata(read_file(tok_path), tok_path, c)) kv.push_back(std::move(e));
  if (const std::string cfg = model_dir + "/tokenizer_config.json"; fs::exists(cfg)) {
    const Json tc = read_json_file(cfg);
    if (tc.contains("chat_template") && tc["chat_template"].is_string())
      kv.emplace_back("tokenizer.chat_template", GgufValue::string(tc["chat_template"].get<std::string>()));
  }

  // Tensors in the converter's order; buffers live until the file is written.
  std::vector<std::vector<uint8_t>> buffers;
  std::vector<GgufTensorToWrite> tensors;
  const int64_t matrices = 1 + 7 * c.num_hidden_layers + (c.tie_word_embeddings ? 0 : 1);
  int64_t done = 0, layer = 0;
  auto add_matrix = [&](const std::string& hf, const MatrixRef& m, int64_t head_dim) {
    if (progress) progress(done++, matrices, hf);
    std::function<int64_t(int64_t)> row_of;
    if (head_dim) row_of = [head_dim](int64_t g) { return hf_row_of_gguf_row(g, head_dim); };
    const DType dt = gguf_matrix_type(type, hf, m.cols, layer, c.num_hidden_layers, c.tie_word_embeddings);
    buffers.push_back(convert_matrix(m, dt, row_of, pool));
    tensors.push_back({gguf_tensor_name(hf), *ggml_type_of(dt), {m.cols, m.rows}, buffers.back().data()});
  };
  auto add_vector = [&](const std::string& hf, const float* v, int64_t n) {
    buffers.emplace_back(reinterpret_cast<const uint8_t*>(v), reinterpret_cast<const uint8_t*>(v + n));
    tensors.push_back({gguf_tensor_name(hf), static_cast<uint32_t>(GgmlType::F32), {n}, buffers.back().data()});
  };
  buffers.reserve(4 + 9 * static_cast<size_t>(c.num_hidden_layers));
  add_matrix("model.embed_tokens.weight", model->embed(), 0);
  const std::vector<float> factors = llama3_rope_factors(c);
  if (!factors.empty()) add_vector("rope_freqs.weight", factors.data(), static_cast<int64_t>(factors.size()));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& w = model->layers()[static_cast<size_t>(l)];
    layer = l;
    const std::string p = fmt::format("model.layers.{}.", l);
    add_vector(p + "input_layernorm.weight", w.attn_norm.data(), c.hidden_size);
    add_matrix(p + "self_attn.q_proj.weight", w.q, c.head_dim);
    add_matrix(p + "self_attn.k_proj.weight", w.k, c.head_dim);
    add_matrix(p + "self_attn.v_proj.weight", w.v, 0);
    add_matrix(p + "self_attn.o_proj.weight", w.o, 0);
    add_vector(p + "post_attention_layernorm.weight", w.ffn_norm.data(), c.hidden_size);
    add_matrix(p + "mlp.gate_proj.weight", w.gate, 0);
    add_matrix(p + "mlp.up_proj.weight", w.up, 0);
    add_matrix(p + "mlp.down_proj.weight", w.down, 0);
  }
  add_vector("model.norm.weight", model->final_norm().data(), c.hidden_size);
  if (!c.tie_word_embeddings) add_matrix("lm_head.weight", model->lm_head(), 0);
  write_gguf(out_path, kv, tensors);
}

}  // namespace flora
