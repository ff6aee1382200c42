// llama.cpp's GGUF LoRA (adapters/gguf_lora.h): a LoRA exported and read back
// is the same adapter value for value (q and k rows of B reordered both ways),
// the file holds llama.cpp's names, shapes and alpha, FLoRA is refused with
// the reason, and a file that lies is refused naming the GGUF tensor.
// llama.cpp applying flora's file is tests/cli/gguf.sh.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <functional>

#include "adapters/gguf_lora.h"
#include "io/gguf.h"
#include "model/gguf_llama.h"
#include "scratch_dir.h"
#include "util/error.h"

namespace flora {
namespace {

class GgufLora : public ScratchDirTest {};

namespace fs = std::filesystem;

const LlamaConfig& tiny() {
  static const LlamaConfig c =
      LlamaConfig::from_file(std::string(FLORA_SOURCE_DIR) + "/tests/fixtures/tiny_llama/f32/config.json");
  return c;
}

Adapter random_lora(std::array<bool, kTargets> targets, bool rslora = false) {
  AdapterConfig c = AdapterConfig::preset("lora", 4, 6.0, targets);
  c.use_rslora = rslora;
  c.init = AdapterInit::Random;
  return Adapter::create(c, tiny(), 7);
}

TEST_F(GgufLora, ExportedLoraReadsBackValueForValue) {
  for (const auto& targets : {std::array<bool, kTargets>{true, true, true, true, true, true, true},
                              std::array<bool, kTargets>{true, false, true, false, false, false, true}}) {
    const Adapter a = random_lora(targets);
    const std::string path = dir_.string() + "/lora.gguf";
    export_lora_gguf(a, tiny(), path);
    const Adapter b = Adapter::load(path, tiny());
    EXPECT_EQ(b.config.family, AdapterFamily::LoRA);
    EXPECT_EQ(b.config.rank, 4);
    EXPECT_EQ(b.config.alpha, 6.0);
    EXPECT_EQ(b.config.forward, targets);
    ASSERT_EQ(b.layers.size(), a.layers.size());
    for (size_t l = 0; l < a.layers.size(); ++l)
      for (Target t : kAllTargets)
        for (char which : {'A', 'B', 'C'}) {
          const AdapterMatrix &x = a.layers[l].matrix(t, which), &y = b.layers[l].matrix(t, which);
          EXPECT_EQ(x.rows, y.rows);
          EXPECT_EQ(x.cols, y.cols);
          EXPECT_EQ(x.data, y.data) << l << " " << target_module(t) << " " << which;
        }
  }
}

TEST_F(GgufLora, FileHoldsLlamaCppsNamesShapesAndRowOrder) {
  const Adapter a = random_lora({true, true, true, true, true, true, true});
  const std::string path = dir_.string() + "/lora.gguf";
  export_lora_gguf(a, tiny(), path);
  const GgufFile f(path);
  EXPECT_EQ(f.get_string("general.type"), "adapter");
  EXPECT_EQ(f.get_string("adapter.type"), "lora");
  EXPECT_EQ(f.get_float("adapter.lora.alpha"), 6.0);
  EXPECT_EQ(f.tensors().size(), 2u * 7u * static_cast<size_t>(tiny().num_hidden_layers));
  const GgufTensor* qa = f.find_tensor("blk.1.attn_q.weight.lora_a");
  const GgufTensor* qb = f.find_tensor("blk.1.attn_q.weight.lora_b");
  const GgufTensor* db = f.find_tensor("blk.0.ffn_down.weight.lora_b");
  ASSERT_TRUE(qa && qb && db);
  EXPECT_EQ(qa->ne, (std::vector<int64_t>{tiny().hidden_size, 4}));  // A (r, in) as ne [in, r]
  EXPECT_EQ(qb->ne, (std::vector<int64_t>{4, tiny().q_dim()}));      // B (out, r) as ne [r, out]
  EXPECT_EQ(db->ne, (std::vector<int64_t>{4, tiny().hidden_size}));
  // Row g of q's B in the file is HF row hf_row_of_gguf_row(g): llama.cpp's order, as for the base's q.
  const AdapterMatrix& B = a.layers[1].B[static_cast<int>(Target::Q)];
  for (int64_t g = 0; g < B.rows; ++g) {
    const int64_t r = hf_row_of_gguf_row(g, tiny().head_dim);
    for (int64_t c = 0; c < B.cols; ++c) {
      float v;
      std::memcpy(&v, qb->data + 4 * (g * B.cols + c), 4);
      ASSERT_EQ(v, B.data[static_cast<size_t>(r * B.cols + c)]) << g << " " << c;
    }
  }
  // rsLoRA: alpha / sqrt(r) written as the alpha llama.cpp divides by r.
  export_lora_gguf(random_lora({true, true, true, true, true, true, true}, true), tiny(), path);
  EXPECT_NEAR(*GgufFile(path).get_float("adapter.lora.alpha"), 6.0 * 2.0, 1e-6);
}

TEST_F(GgufLora, FloraAndLyingFilesAreRefused) {
  AdapterConfig fc = AdapterConfig::preset("ffba", 2, 4.0);
  const Adapter flora_adapter = Adapter::create(fc, tiny(), 1);
  EXPECT_NE(error_of([&] {
              export_lora_gguf(flora_adapter, tiny(), dir_.string() + "/f.gguf");
            }).find("a ffba adapter (FLoRA) has no llama.cpp format"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(dir_.string() + "/f.gguf"));

  const std::string good = dir_.string() + "/good.gguf";
  export_lora_gguf(random_lora({true, true, true, true, true, true, true}), tiny(), good);
  const GgufFile base(good);
  // The good file with its metadata edited and tensors dropped or added.
  auto variant = [&](const std::string& name, const std::function<void(std::vector<std::pair<std::string, GgufValue>>&,
                                                                       std::vector<GgufTensorToWrite>&)>& edit) {
    std::vector<std::pair<std::string, GgufValue>> kv(base.metadata().begin(), base.metadata().end());
    std::vector<GgufTensorToWrite> tensors;
    for (const GgufTensor& t : base.tensors()) tensors.push_back({t.name, t.type, t.ne, t.data});
    edit(kv, tensors);
    const std::string path = dir_.string() + "/" + name + ".gguf";
    write_gguf(path, kv, tensors);
    return path;
  };
  auto set = [](std::vector<std::pair<std::string, GgufValue>>& kv, const std::string& key, GgufValue v) {
    for (auto& e : kv)
      if (e.first == key) e.second = v;
  };
  auto drop = [](std::vector<GgufTensorToWrite>& ts, const std::string& name) {
    std::erase_if(ts, [&](const GgufTensorToWrite& t) { return t.name == name; });
  };
  static const std::vector<float> zeros(64 * 4, 0.0f);
  struct Case {
    std::string name;
    std::function<void(std::vector<std::pair<std::string, GgufValue>>&, std::vector<GgufTensorToWrite>&)> edit;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"model", [&](auto& kv, auto&) { set(kv, "general.type", GgufValue::string("model")); },
       "general.type is 'model': expected 'adapter'"},
      {"control", [&](auto& kv, auto&) { set(kv, "adapter.type", GgufValue::string("control_vector")); },
       "adapter.type is 'control_vector': expected 'lora'"},
      {"alora", [&](auto& kv, auto&) { kv.emplace_back("adapter.alora.invocation_tokens", GgufValue::i32_array({1})); },
       "activated LoRA"},
      {"no-b", [&](auto&, auto& ts) { drop(ts, "blk.1.ffn_up.weight.lora_b"); },
       "tensor 'blk.1.ffn_up.weight.lora_b' is missing"},
      {"layer-1-only", [&](auto&, auto& ts) { drop(ts, "blk.1.attn_v.weight.lora_a"); },
       "tensor 'blk.1.attn_v.weight.lora_a' is missing"},
      {"extra",
       [&](auto&, auto& ts) {
         ts.push_back({"blk.0.attn_q.weight.lora_c", 0, {64, 4}, zeros.data()});
       },
       "unexpected tensor 'blk.0.attn_q.weight.lora_c'"},
      {"rank",
       [&](auto&, auto& ts) {
         drop(ts, "blk.0.attn_k.weight.lora_a");
         ts.push_back({"blk.0.attn_k.weight.lora_a", 0, {64, 2}, zeros.data()});
       },
       "tensor 'blk.0.attn_k.weight.lora_a' has rank 2, other targets 4"},
      {"none", [&](auto&, auto& ts) { ts.clear(); }, "no lora_a tensor for layer 0"},
  };
  for (const Case& c : cases) {
    const std::string path = variant(c.name, c.edit);
    const std::string message = error_of([&] { Adapter::load(path, tiny()); });
    EXPECT_NE(message.find(path), std::string::npos) << c.name << ": " << message;
    EXPECT_NE(message.find(c.says), std::string::npos) << c.name << ": " << message;
  }
}

}  // namespace
}  // namespace flora
