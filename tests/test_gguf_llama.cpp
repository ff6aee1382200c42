// Llama in GGUF (model/gguf_llama.h): names both ways, llama.cpp's row order
// of q and k against the converter's own reshape, a model written as GGUF
// that loads back to the same weights and logits, the tokenizer through GGUF
// metadata (the real Llama 3 one), llama3's RoPE as factors, and the
// refusals. llama.cpp reading flora's files is tests/cli/gguf.sh.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>

#include "model/forward.h"
#include "model/gguf_llama.h"
#include "model/weights.h"
#include "scratch_dir.h"
#include "util/error.h"
#include "util/file.h"
#include "util/threads.h"

namespace flora {
namespace {

class GgufLlama : public ScratchDirTest {};

namespace fs = std::filesystem;
const std::string kFixtures = std::string(FLORA_SOURCE_DIR) + "/tests/fixtures/";

// The tiny fixture model (GQA, tied embedding, llama3 RoPE) as a model directory with its tokenizer.
std::string tiny_dir(const std::filesystem::path& dir, const std::string& dtype) {
  const std::string d = (dir / ("tiny-" + dtype)).string();
  fs::create_directories(d);
  for (const char* f : {"config.json", "model.safetensors"})
    fs::copy_file(kFixtures + "tiny_llama/" + dtype + "/" + f, d + "/" + f, fs::copy_options::overwrite_existing);
  fs::copy_file(kFixtures + "tokenizer/tiny_tokenizer.json", d + "/tokenizer.json",
                fs::copy_options::overwrite_existing);
  return d;
}

TEST_F(GgufLlama, TensorNamesMapBothWays) {
  const LlamaConfig c = LlamaConfig::from_file(kFixtures + "tiny_llama/f32/config.json");
  for (const TensorSpec& spec : llama_tensor_specs(c)) {
    const std::string g = gguf_tensor_name(spec.name);
    EXPECT_EQ(hf_tensor_name(g), spec.name) << g;
  }
  EXPECT_EQ(gguf_tensor_name("model.layers.12.mlp.down_proj.weight"), "blk.12.ffn_down.weight");
  EXPECT_EQ(gguf_tensor_name("model.embed_tokens.weight"), "token_embd.weight");
  EXPECT_EQ(hf_tensor_name("output.weight"), "lm_head.weight");
  for (const char* unknown :
       {"blk.x.attn_q.weight", "blk.1.attn_q.bias", "blk..attn_q.weight", "token_embd", "blk.1", "rope_freqs"})
    EXPECT_FALSE(hf_tensor_name(unknown).has_value()) << unknown;
  EXPECT_NE(error_of([] { gguf_tensor_name("model.layers.0.self_attn.rotary_emb.inv_freq"); }).find("no GGUF name"),
            std::string::npos);
}

// convert_hf_to_gguf.py's permute: w.reshape(n_head, 2, hd / 2, in).swapaxes(1, 2).reshape(w.shape),
// written out as index arithmetic: GGUF row (head, i, h) is HF row (head, h, i).
TEST_F(GgufLlama, RowOrderIsTheConvertersPermutation) {
  for (int64_t hd : {2, 8, 16, 64, 128}) {
    const int64_t heads = 3, half = hd / 2;
    for (int64_t head = 0; head < heads; ++head)
      for (int64_t i = 0; i < half; ++i)
        for (int64_t h = 0; h < 2; ++h) {
          const int64_t gguf_row = head * hd + i * 2 + h;   // (head, i, h) in the (n_head, hd/2, 2) view
          const int64_t hf_row = head * hd + h * half + i;  // (head, h, i) in the (n_head, 2, hd/2) view
          EXPECT_EQ(hf_row_of_gguf_row(gguf_row, hd), hf_row);
          EXPECT_EQ(gguf_row_of_hf_row(hf_row, hd), gguf_row);
        }
  }
}

// The row guarantee of the loader: every matrix of a bf16 model read back
// from its bf16 GGUF is the same bytes, q and k included (their rows put back
// in Hugging Face's order), and the norms are the same floats; so the logits
// differ only through what GGUF stores in f32 (rms_norm_eps, the RoPE factors).
TEST_F(GgufLlama, WrittenModelLoadsBackToTheSameWeightsAndLogits) {
  const std::string src = tiny_dir(dir_, "bf16");
  const std::string file = dir_.string() + "/tiny.gguf";
  int64_t calls = 0, total = 0;
  write_llama_gguf(src, file, GgufOutType::kBF16, [&](int64_t done, int64_t n, const std::string&) {
    EXPECT_EQ(done, calls++);
    total = n;
  });
  EXPECT_EQ(calls, total);
  const auto a = LlamaModel::load(src), b = LlamaModel::load(file);
  const LlamaConfig &ca = a->config(), &cb = b->config();
  EXPECT_EQ(cb.hidden_size, ca.hidden_size);
  EXPECT_EQ(cb.intermediate_size, ca.intermediate_size);
  EXPECT_EQ(cb.num_hidden_layers, ca.num_hidden_layers);
  EXPECT_EQ(cb.num_attention_heads, ca.num_attention_heads);
  EXPECT_EQ(cb.num_key_value_heads, ca.num_key_value_heads);
  EXPECT_EQ(cb.head_dim, ca.head_dim);
  EXPECT_EQ(cb.vocab_size, ca.vocab_size);
  EXPECT_EQ(cb.max_position_embeddings, ca.max_position_embeddings);
  EXPECT_EQ(cb.tie_word_embeddings, ca.tie_word_embeddings);
  EXPECT_EQ(cb.bos_token_id, ca.bos_token_id);
  EXPECT_EQ(cb.eos_token_ids, ca.eos_token_ids);
  EXPECT_EQ(static_cast<float>(cb.rms_norm_eps), static_cast<float>(ca.rms_norm_eps));
  EXPECT_EQ(cb.rope_freq_factors, llama3_rope_factors(ca));
  auto same = [](const MatrixRef& x, const MatrixRef& y, const std::string& what) {
    ASSERT_EQ(x.dtype, y.dtype) << what;
    ASSERT_EQ(x.rows, y.rows) << what;
    ASSERT_EQ(x.cols, y.cols) << what;
    EXPECT_EQ(std::memcmp(x.data, y.data, static_cast<size_t>(x.rows * x.cols) * dtype_size(x.dtype)), 0) << what;
  };
  same(a->embed(), b->embed(), "embed");
  EXPECT_EQ(a->final_norm(), b->final_norm());
  for (size_t l = 0; l < a->layers().size(); ++l) {
    const LayerWeights &x = a->layers()[l], &y = b->layers()[l];
    same(x.q, y.q, "q");
    same(x.k, y.k, "k");
    same(x.v, y.v, "v");
    same(x.o, y.o, "o");
    same(x.gate, y.gate, "gate");
    same(x.up, y.up, "up");
    same(x.down, y.down, "down");
    EXPECT_EQ(x.attn_norm, y.attn_norm);
    EXPECT_EQ(x.ffn_norm, y.ffn_norm);
  }
  // Logits of a prompt longer than the RoPE's original context (64 here), so that the scaled frequencies count.
  ThreadPool pool(1);
  std::vector<int32_t> tokens(80);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 37 + 11) % 384);
  Forward fa(*a, pool, 128), fb(*b, pool, 128);
  const int64_t V = ca.vocab_size, T = static_cast<int64_t>(tokens.size());
  const float* pa = fa.forward(tokens.data(), T, true);
  std::vector<float> xa(pa, pa + T * V);
  const float* pb = fb.forward(tokens.data(), T, true);
  double worst = 0;
  for (int64_t i = 0; i < T * V; ++i) {
    ASSERT_TRUE(std::isfinite(pb[i])) << i;
    worst = std::max(worst, static_cast<double>(std::abs(xa[i] - pb[i])));
  }
  // f32 factors against double frequencies: angles differ by ~1e-7 of themselves.
  EXPECT_LT(worst, 1e-3) << "largest logit difference";
}

TEST_F(GgufLlama, RealLlama3TokenizerThroughGgufMetadataEncodesTheSame) {
  const std::string path = std::string(FLORA_SOURCE_DIR) + "/.deps/llama3/tokenizer.json";
  ASSERT_TRUE(fs::exists(path)) << path << ": run scripts/setup.sh";
  LlamaConfig c = LlamaConfig::preset("llama-3.2-1b");
  auto kv = gguf_tokenizer_metadata(read_file(path), path, c);
  kv.insert(kv.begin(), {"general.architecture", GgufValue::string("llama")});
  const std::string file = dir_.string() + "/tokenizer.gguf";
  write_gguf(file, kv, {});
  const Tokenizer want = Tokenizer::from_file(path);
  const Tokenizer got = tokenizer_from_gguf(GgufFile(file));
  EXPECT_EQ(got.vocab_size(), want.vocab_size());
  EXPECT_EQ(got.bos_id(), want.bos_id());
  EXPECT_EQ(got.eos_ids(), want.eos_ids());
  for (const std::string text : std::vector<std::string>{
           "The capital of France is Paris.", "  leading spaces\n\nand\ttabs  ", "numbers 1234567 and 3.14159",
           "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>", "émigré naïve 東京 🙂",
           "I'm sure they'll've done it", "x" + std::string(300, 'a')}) {
    for (bool bos : {false, true}) {
      const auto ids = want.encode(text, bos);
      EXPECT_EQ(got.encode(text, bos), ids) << text;
      EXPECT_EQ(got.decode(ids), want.decode(ids)) << text;
    }
  }
}

TEST_F(GgufLlama, Llama3RopeFactorsGiveTheScaledFrequencies) {
  LlamaConfig c = LlamaConfig::preset("llama-3.2-1b");
  ASSERT_EQ(c.rope_scaling.type, "llama3");
  const std::vector<double> want = rope_inverse_frequencies(c);
  LlamaConfig g = c;
  g.rope_scaling = RopeScaling{};
  g.rope_freq_factors = llama3_rope_factors(c);
  ASSERT_EQ(g.rope_freq_factors.size(), want.size());
  const std::vector<double> got = rope_inverse_frequencies(g);
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i] / want[i], 1.0, 1e-7) << i;
  // Without llama3 scaling there are no factors (llama.cpp then needs no rope_freqs tensor).
  LlamaConfig plain = c;
  plain.rope_scaling = RopeScaling{};
  EXPECT_TRUE(llama3_rope_factors(plain).empty());
}

// Files that are GGUF but not a Llama flora runs: one message each, naming the file and the key.
TEST_F(GgufLlama, WhatFloraDoesNotRunIsRefusedByName) {
  const std::string src = tiny_dir(dir_, "bf16");
  const std::string good = dir_.string() + "/good.gguf";
  write_llama_gguf(src, good, GgufOutType::kF16);
  const GgufFile base(good);
  // The good file's metadata with one key changed (or removed: a null value), its tensors as they are.
  auto variant = [&](const std::string& name, const std::string& key, std::optional<GgufValue> value) {
    std::vector<std::pair<std::string, GgufValue>> kv;
    bool found = false;
    for (const auto& [k, v] : base.metadata()) {
      if (k == key) {
        found = true;
        if (value) kv.emplace_back(k, *value);
      } else {
        kv.emplace_back(k, v);
      }
    }
    if (!found && value) kv.emplace_back(key, *value);
    std::vector<GgufTensorToWrite> tensors;
    for (const GgufTensor& t : base.tensors()) tensors.push_back({t.name, t.type, t.ne, t.data});
    const std::string path = dir_.string() + "/" + name + ".gguf";
    write_gguf(path, kv, tensors);
    return path;
  };
  struct Case {
    std::string name, key;
    std::optional<GgufValue> value;
    std::string says;
    bool tokenizer = false;
  };
  const std::vector<Case> cases = {
      {"arch", "general.architecture", GgufValue::string("qwen2"), "general.architecture is 'qwen2': flora runs Llama"},
      {"no-d", "llama.embedding_length", std::nullopt, "metadata key 'llama.embedding_length' is missing"},
      {"type", "llama.block_count", GgufValue::string("two"), "'llama.block_count': expected an unsigned integer"},
      {"heads", "llama.attention.head_count_kv", GgufValue::u32(3), "not a multiple of num_key_value_heads 3"},
      {"yarn", "llama.rope.scaling.type", GgufValue::string("yarn"), "llama.rope.scaling.type 'yarn'"},
      {"partial", "llama.rope.dimension_count", GgufValue::u32(8), "partial RoPE"},
      {"spm", "tokenizer.ggml.model", GgufValue::string("llama"), "tokenizer.ggml.model 'llama'", true},
      {"pre", "tokenizer.ggml.pre", GgufValue::string("qwen2"), "tokenizer.ggml.pre 'qwen2'", true},
      {"types", "tokenizer.ggml.token_type", GgufValue::i32_array({1, 1}), "expected an array of 384 integers", true},
      {"no-merges", "tokenizer.ggml.merges", std::nullopt, "'tokenizer.ggml.merges' is missing", true},
  };
  for (const Case& c : cases) {
    const std::string path = variant(c.name, c.key, c.value);
    const std::string message =
        c.tokenizer ? error_of([&] { load_model_tokenizer(path); }) : error_of([&] { LlamaModel::load(path); });
    EXPECT_NE(message.find(path), std::string::npos) << c.name << ": " << message;
    EXPECT_NE(message.find(c.says), std::string::npos) << c.name << ": " << message;
  }
  // A model directory that is not there, and a file that is not GGUF.
  EXPECT_NE(error_of([&] { LlamaModel::load(src + "/config.json"); }).find("not a GGUF file"), std::string::npos);
  EXPECT_NE(error_of([&] {
              write_llama_gguf(dir_.string() + "/none", dir_.string() + "/x.gguf", GgufOutType::kF16);
            }).find("none"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(dir_.string() + "/x.gguf"));
}

}  // namespace
}  // namespace flora
