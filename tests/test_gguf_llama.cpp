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
#include <sstream>

#include "model/forward.h"
#include "model/gguf_llama.h"
#include "model/weights.h"
#include "ops/quant.h"
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
  for (const std::string& text : std::vector<std::string>{
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


TEST_F(GgufLlama, QuantizedTypeMixIsLlamaQuantizesAtTheRealShape) {
  // Llama-3.2-1B: 16 layers, tied embedding, rows of 2048 and 8192.
  std::string mix;
  for (int64_t l = 0; l < 16; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    const DType v = gguf_matrix_type(GgufOutType::kQ4_K_M, p + "self_attn.v_proj.weight", 2048, l, 16, true);
    const DType down = gguf_matrix_type(GgufOutType::kQ4_K_M, p + "mlp.down_proj.weight", 8192, l, 16, true);
    EXPECT_EQ(v, down) << l;
    EXPECT_EQ(gguf_matrix_type(GgufOutType::kQ4_K_M, p + "self_attn.q_proj.weight", 2048, l, 16, true), DType::Q4_K);
    EXPECT_EQ(gguf_matrix_type(GgufOutType::kQ4_0, p + "mlp.down_proj.weight", 8192, l, 16, true), DType::Q4_0);
    mix += v == DType::Q6_K ? '6' : v == DType::Q4_K ? '4' : '?';
  }
  // use_more_bits: layers 0-1 and 14-15, and 4, 7, 10, 13 (every third after the first eighth).
  EXPECT_EQ(mix, "6644644644644666");
  for (GgufOutType t : {GgufOutType::kQ4_K_M, GgufOutType::kQ4_0}) {
    EXPECT_EQ(gguf_matrix_type(t, "model.embed_tokens.weight", 2048, 0, 16, true), DType::Q6_K);
    EXPECT_EQ(gguf_matrix_type(t, "lm_head.weight", 2048, 0, 16, false), DType::Q6_K);
  }
  EXPECT_EQ(gguf_matrix_type(GgufOutType::kQ4_K_M, "model.embed_tokens.weight", 2048, 0, 16, false), DType::Q4_K);
  EXPECT_EQ(gguf_matrix_type(GgufOutType::kQ8_0, "model.embed_tokens.weight", 2048, 0, 16, true), DType::Q8_0);
  // Rows that are not whole blocks: Q6_K -> Q8_0, Q4_K -> Q4_0, then F16.
  EXPECT_EQ(gguf_matrix_type(GgufOutType::kQ4_K_M, "lm_head.weight", 96, 0, 16, false), DType::Q8_0);
  EXPECT_EQ(gguf_matrix_type(GgufOutType::kQ4_K_M, "model.layers.3.mlp.up_proj.weight", 96, 3, 16, true),
            DType::Q4_0);
  EXPECT_EQ(gguf_matrix_type(GgufOutType::kQ4_K_M, "model.layers.3.mlp.up_proj.weight", 200, 3, 16, true),
            DType::F16);
  EXPECT_EQ(gguf_matrix_type(GgufOutType::kQ8_0, "model.layers.3.mlp.up_proj.weight", 200, 3, 16, true), DType::F16);
}

TEST_F(GgufLlama, QuantizedFilesLoadToTheirBlocksAndComputeNearTheSourceLogitsBatchInvariant) {
  // flora's own pretrained small model: rows of 256 and 768, so every block format fits.
  const std::string src = std::string(FLORA_SOURCE_DIR) + "/assets/flora-small";
  const auto dense = LlamaModel::load(src);
  ThreadPool pool(1);
  std::vector<int32_t> tokens(48);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 37 + 11) % 1000);
  const int64_t V = dense->config().vocab_size, T = static_cast<int64_t>(tokens.size());
  Forward fd(*dense, pool, 64);
  const float* pd = fd.forward(tokens.data(), T, true);
  const std::vector<float> ref(pd, pd + T * V);
  double ref_scale = 0;
  for (float x : ref) ref_scale = std::max(ref_scale, static_cast<double>(std::abs(x)));

  struct Case {
    GgufOutType type;
    const char* name;
    DType q, v3;        // layer 0's q_proj, layer 3's v_proj (use_more_bits in q4_k_m)
    double tolerance;   // of the largest logit difference, as a share of the largest logit
  };
  for (const Case& c : {Case{GgufOutType::kQ8_0, "q8_0", DType::Q8_0, DType::Q8_0, 0.03},
                        Case{GgufOutType::kQ4_0, "q4_0", DType::Q4_0, DType::Q4_0, 0.35},
                        Case{GgufOutType::kQ4_K_M, "q4_k_m", DType::Q4_K, DType::Q6_K, 0.35}}) {
    SCOPED_TRACE(c.name);
    const std::string file = dir_.string() + "/small-" + c.name + ".gguf";
    write_llama_gguf(src, file, c.type);
    // Rows convert independently: three threads write the same bytes as one.
    write_llama_gguf(src, file + ".t3", c.type, {}, 3);
    EXPECT_EQ(read_file(file), read_file(file + ".t3"));
    for (bool mmap : {false, true}) {
      const auto m = LlamaModel::load(file, mmap);
      const LayerWeights& w0 = m->layers()[0];
      ASSERT_EQ(w0.q.dtype, c.q);
      ASSERT_EQ(m->layers()[3].v.dtype, c.v3);
      EXPECT_EQ(m->embed().dtype, c.type == GgufOutType::kQ8_0 ? DType::Q8_0 : DType::Q6_K);  // tied: the output
      // Rows of q back in Hugging Face's order, each the blocks quantize_row makes of the source row.
      const MatrixRef& sq = dense->layers()[0].q;
      std::vector<float> row(static_cast<size_t>(sq.cols));
      std::vector<uint8_t> blocks(quantized_bytes(c.q, sq.cols));
      for (int64_t r : {int64_t{0}, int64_t{1}, int64_t{33}, sq.rows - 1}) {
        embedding_row(sq, r, row.data());
        quantize_row(c.q, row.data(), sq.cols, blocks.data());
        EXPECT_EQ(std::memcmp(blocks.data(), static_cast<const uint8_t*>(w0.q.data) + r * w0.q.row_bytes(),
                              blocks.size()),
                  0)
            << "row " << r;
      }
      EXPECT_LT(m->decode_weight_bytes(), dense->decode_weight_bytes());
      Forward fq(*m, pool, 64);
      const float* pq = fq.forward(tokens.data(), T, true);
      double worst = 0;
      for (int64_t i = 0; i < T * V; ++i) {
        ASSERT_TRUE(std::isfinite(pq[i])) << i;
        worst = std::max(worst, static_cast<double>(std::abs(pq[i] - ref[static_cast<size_t>(i)])));
      }
      EXPECT_LT(worst, c.tolerance * ref_scale) << "largest logit difference (largest logit " << ref_scale << ")";
      std::printf("%s (mmap %d): largest logit difference %.4f of largest logit %.2f\n", c.name, mmap, worst,
                  ref_scale);
    }
    // The integer products round each token's activations alone and run the
    // same operations for every (row, token): a prompt prefilled in pieces
    // or decoded token by token gets the logits of the whole, bit for bit,
    // on any number of threads (what batching in `flora serve` rests on).
    const auto m = LlamaModel::load(file);
    ThreadPool two(2);
    Forward whole(*m, two, T);
    const float* all = whole.forward(tokens.data(), T, true);
    const std::vector<float> want(all, all + T * V);
    for (int64_t piece : {1, 5}) {
      Forward f(*m, piece == 1 ? pool : two, T);
      for (int64_t t0 = 0; t0 < T; t0 += piece) {
        const int64_t n = std::min(piece, T - t0);
        const float* got = f.forward(tokens.data() + t0, n, true);
        ASSERT_EQ(0, std::memcmp(got, want.data() + t0 * V, static_cast<size_t>(n * V) * sizeof(float)))
            << "pieces of " << piece << ", tokens " << t0 << ".." << t0 + n;
      }
    }
  }
}

TEST_F(GgufLlama, ANonFiniteBlockScaleIsRefusedNamingTheElement) {
  const std::string src = std::string(FLORA_SOURCE_DIR) + "/assets/flora-small";
  const std::string good = dir_.string() + "/good.gguf";
  write_llama_gguf(src, good, GgufOutType::kQ8_0);
  const GgufFile base(good);
  std::vector<std::vector<uint8_t>> copies;
  std::vector<GgufTensorToWrite> tensors;
  copies.reserve(base.tensors().size());
  for (const GgufTensor& t : base.tensors()) {
    copies.emplace_back(t.data, t.data + t.nbytes);
    if (t.name == "blk.1.ffn_up.weight") {
      const uint16_t inf = 0x7c00;  // f16 +Inf as the scale of block 3 of row 0: elements 96..127
      std::memcpy(copies.back().data() + 3 * q8_0::kBytes + q8_0::kD, &inf, 2);
    }
    tensors.push_back({t.name, t.type, t.ne, copies.back().data()});
  }
  std::vector<std::pair<std::string, GgufValue>> kv(base.metadata().begin(), base.metadata().end());
  const std::string bad = dir_.string() + "/bad.gguf";
  write_gguf(bad, kv, tensors);
  for (bool mmap : {false, true}) {
    const std::string message = error_of([&] { LlamaModel::load(bad, mmap); });
    EXPECT_NE(message.find("tensor 'blk.1.ffn_up.weight': element 96 is"), std::string::npos) << message;
    const auto m = LlamaModel::load(bad, ModelLoadOptions{mmap, true});
    EXPECT_NE(m->nonfinite_report().find("element 96"), std::string::npos) << m->nonfinite_report();
  }
}

// kB of the mappings of `path` resident in this process (/proc/self/smaps), or -1 when it is not mapped.
int64_t mapped_rss_kb(const std::string& path) {
  std::istringstream smaps(read_file("/proc/self/smaps"));
  const std::string canonical = fs::canonical(path).string();
  int64_t total = -1;
  bool in = false;
  for (std::string line; std::getline(smaps, line);) {
    if (line.find('-') < line.find(' ') && line.find(' ') != std::string::npos &&
        std::isxdigit(static_cast<unsigned char>(line[0]))) {
      in = line.size() >= canonical.size() && line.compare(line.size() - canonical.size(), canonical.size(),
                                                           canonical) == 0;
      if (in && total < 0) total = 0;
    } else if (in && line.rfind("Rss:", 0) == 0) {
      total += std::stoll(line.substr(4));
    }
  }
  return total;
}

// A copying load gives each matrix's pages back as soon as it is copied
// (MappedFile::drop_pages of a range): exactly the pages the range touches go,
// the others stay, and the bytes read the same afterwards.
TEST_F(GgufLlama, DroppingARangeGivesBackThePagesItTouches) {
  const int64_t page = ::sysconf(_SC_PAGESIZE), pages = 64;
  std::string bytes(static_cast<size_t>(pages * page), '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 131 % 251);
  const std::string path = dir_.string() + "/pages.bin";
  write_file_atomic(path, bytes);
  const MappedFile file(path);
  ASSERT_EQ(std::memcmp(file.data(), bytes.data(), bytes.size()), 0);  // every page resident now
  ASSERT_EQ(mapped_rss_kb(path), pages * page / 1024);
  const int64_t begin = page + 100, n = 20 * page;  // touches pages 1..21
  file.drop_pages(file.data() + begin, static_cast<size_t>(n));
  EXPECT_EQ(mapped_rss_kb(path), (pages - 21) * page / 1024);
  EXPECT_EQ(std::memcmp(file.data(), bytes.data(), bytes.size()), 0);
  EXPECT_EQ(mapped_rss_kb(path), pages * page / 1024);
}

TEST_F(GgufLlama, ACopyingLoadGivesTheFilesPagesBack) {
  // The arena holds the matrices after a copying load: the file's pages need
  // not stay resident (MappedFile::drop_pages), and reading in place keeps them.
  const std::string file = dir_.string() + "/small-q8_0.gguf";
  write_llama_gguf(std::string(FLORA_SOURCE_DIR) + "/assets/flora-small", file, GgufOutType::kQ8_0);
  const std::string dir = std::string(FLORA_SOURCE_DIR) + "/assets/flora-small";
  for (const auto& [path, mapped] : {std::pair{file, file}, std::pair{dir, dir + "/model.safetensors"}}) {
    const auto copied = LlamaModel::load(path, false);
    EXPECT_EQ(mapped_rss_kb(mapped), 0) << path;
    const auto in_place = LlamaModel::load(path, true);
    // Its NaN scan read every byte of the file, so its own mapping is resident.
    EXPECT_GT(mapped_rss_kb(mapped), 1000) << path;
    // The copy still computes what reading in place does.
    ThreadPool pool(1);
    const int32_t tokens[3] = {1019, 5, 77};
    Forward fa(*copied, pool, 8), fb(*in_place, pool, 8);
    const float* a = fa.forward(tokens, 3, false);
    const std::vector<float> la(a, a + copied->config().vocab_size);
    const float* b = fb.forward(tokens, 3, false);
    EXPECT_EQ(std::memcmp(la.data(), b, la.size() * sizeof(float)), 0) << path;
  }
}

}  // namespace
}  // namespace flora
