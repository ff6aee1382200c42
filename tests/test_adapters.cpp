// Adapter configurations (presets, validation, adapter_config.json), adapter
// files (create/save/load round trips, every load error), parameter counts,
// and merging LoRA into a model directory.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "adapters/adapter.h"
#include "adapters/config.h"
#include "adapters/exec.h"
#include "adapters/merge.h"
#include "io/safetensors.h"
#include "io/tensor_store.h"
#include "model/config.h"
#include "model/init.h"
#include "model/weights.h"
#include "scratch_dir.h"
#include "util/error.h"
#include "util/file.h"
#include "util/json.h"

#ifndef FLORA_BINARY_DIR
#define FLORA_BINARY_DIR "/tmp"
#endif

namespace fs = std::filesystem;
using namespace flora;

namespace {

using Mask = std::array<bool, kTargets>;
constexpr Mask kAll = {true, true, true, true, true, true, true};
constexpr Mask kNone = {};
constexpr Mask kEntries = {true, true, true, false, true, true, false};
constexpr Mask kExits = {false, false, false, true, false, false, true};

class Adapters : public ScratchDirTest {
 protected:
  LlamaConfig tiny = LlamaConfig::preset("tiny");
};

#define EXPECT_HAS(msg, word) EXPECT_NE((msg).find(word), std::string::npos) << "'" << (word) << "' not in: " << (msg)

void expect_same_config(const AdapterConfig& a, const AdapterConfig& b) {
  EXPECT_EQ(a.family, b.family);
  EXPECT_EQ(a.rank, b.rank);
  EXPECT_DOUBLE_EQ(a.alpha, b.alpha);
  EXPECT_EQ(a.use_rslora, b.use_rslora);
  EXPECT_EQ(a.forward, b.forward);
  EXPECT_EQ(a.repeat_add, b.repeat_add);
  EXPECT_EQ(a.backward, b.backward);
  EXPECT_EQ(a.carry, b.carry);
  EXPECT_EQ(a.nonlinearity, b.nonlinearity);
}

void expect_same_values(const Adapter& a, const Adapter& b) {
  ASSERT_EQ(a.layers.size(), b.layers.size());
  for (size_t l = 0; l < a.layers.size(); ++l)
    for (int i = 0; i < kTargets; ++i) {
      for (auto m : {&LayerAdapter::A, &LayerAdapter::B, &LayerAdapter::C}) {
        const AdapterMatrix& x = (a.layers[l].*m)[i];
        const AdapterMatrix& y = (b.layers[l].*m)[i];
        EXPECT_EQ(x.rows, y.rows);
        EXPECT_EQ(x.cols, y.cols);
        EXPECT_EQ(x.data, y.data) << "layer " << l << " target " << i;
      }
    }
}

// Replaces the adapter's safetensors file by `tensors` (all F32 unless given).
void write_tensors(const std::string& dir, const std::vector<TensorToWrite>& tensors) {
  write_safetensors(dir + "/adapter_model.safetensors", tensors);
}

std::vector<TensorToWrite> tensors_of(const Adapter& a) {
  std::vector<TensorToWrite> out;
  for (size_t l = 0; l < a.layers.size(); ++l)
    for (Target t : kAllTargets) {
      const int i = static_cast<int>(t);
      const LayerAdapter& la = a.layers[l];
      for (auto [which, m] : {std::pair{'A', &la.A[i]}, std::pair{'B', &la.B[i]}, std::pair{'C', &la.C[i]}})
        if (!m->empty())
          out.push_back({Adapter::tensor_name(a.config, static_cast<int64_t>(l), t, which),
                         DType::F32,
                         {m->rows, m->cols},
                         m->data.data()});
    }
  return out;
}

void edit_config(const std::string& dir, const std::function<void(Json&)>& edit) {
  Json j = read_json_file(dir + "/adapter_config.json");
  edit(j);
  write_file_atomic(dir + "/adapter_config.json", j.dump(2));
}

}  // namespace

// ---------------------------------------------------------------------------
// Configuration

TEST(AdapterConfig, TargetNames) {
  EXPECT_STREQ(target_short_name(Target::Gate), "gate");
  EXPECT_STREQ(target_module(Target::Down), "down_proj");
  EXPECT_STREQ(target_path(Target::Q), "self_attn.q_proj");
  EXPECT_STREQ(target_path(Target::Up), "mlp.up_proj");
  EXPECT_TRUE(is_exit(Target::O));
  EXPECT_FALSE(is_exit(Target::V));
}

TEST(AdapterConfig, LoraPresets) {
  const struct {
    const char* name;
    LoraExecution exec;
  } cases[] = {{"lora", LoraExecution::Unfused},
               {"pf-lora", LoraExecution::PartiallyFused},
               {"lora-merged", LoraExecution::Merged}};
  for (const auto& c : cases) {
    const AdapterConfig a = AdapterConfig::preset(c.name, 8, 16);
    EXPECT_EQ(a.variant, c.name);
    EXPECT_EQ(a.family, AdapterFamily::LoRA);
    EXPECT_EQ(a.lora_execution, c.exec);
    EXPECT_EQ(a.rank, 8);
    EXPECT_EQ(a.forward, kAll);
    EXPECT_EQ(a.repeat_add, kNone);
    EXPECT_EQ(a.backward, kNone);
    EXPECT_EQ(a.carry, kNone);
    EXPECT_DOUBLE_EQ(a.scale(), 2.0);
    a.validate("test");
  }
  const Mask qv = {true, false, true, false, false, false, false};
  EXPECT_EQ(AdapterConfig::preset("lora", 4, 8, qv).forward, qv);
  EXPECT_HAS(error_of([&] { AdapterConfig::preset("lora", 4, 8, kNone); }), "no target");
}

TEST(AdapterConfig, FloraPresets) {
  const AdapterConfig ffa = AdapterConfig::preset("ffa", 8, 16);
  EXPECT_EQ(ffa.family, AdapterFamily::FLoRA);
  EXPECT_EQ(ffa.rank, 16);
  EXPECT_EQ(ffa.forward, kAll);
  EXPECT_EQ(ffa.repeat_add, kAll);
  EXPECT_EQ(ffa.backward, kNone);
  EXPECT_EQ(ffa.carry, kNone);
  EXPECT_DOUBLE_EQ(ffa.scale(), 1.0);

  const AdapterConfig ffba = AdapterConfig::preset("ffba", 8, 16);
  EXPECT_EQ(ffba.rank, 8);
  EXPECT_EQ(ffba.forward, kAll);
  EXPECT_EQ(ffba.repeat_add, kEntries);
  EXPECT_EQ(ffba.backward, kExits);
  EXPECT_EQ(ffba.carry, kExits);
  EXPECT_EQ(ffba.nonlinearity, Nonlinearity::Identity);

  const AdapterConfig aorb = AdapterConfig::preset("ffba-aorb", 8, 16);
  EXPECT_EQ(aorb.forward, kEntries);
  EXPECT_EQ(aorb.repeat_add, kEntries);
  EXPECT_EQ(aorb.backward, kExits);
  EXPECT_EQ(aorb.carry, kNone);

  const AdapterConfig qg = AdapterConfig::preset("ffba-qg", 8, 16);
  EXPECT_EQ(qg.forward, kAll);
  EXPECT_EQ(qg.repeat_add, (Mask{true, false, false, false, true, false, false}));
  EXPECT_EQ(qg.backward, kExits);
  EXPECT_EQ(qg.carry, kExits);

  const AdapterConfig relu = AdapterConfig::preset("ffba-relu", 8, 16);
  EXPECT_EQ(relu.nonlinearity, Nonlinearity::ReLU);
  EXPECT_EQ(relu.forward, ffba.forward);
  EXPECT_EQ(relu.repeat_add, ffba.repeat_add);
  EXPECT_EQ(relu.carry, ffba.carry);

  for (const auto* v : {"ffa", "ffba", "ffba-aorb", "ffba-qg", "ffba-relu"}) {
    AdapterConfig c = AdapterConfig::preset(v, 8, 16);
    EXPECT_EQ(c.variant, v);
    c.validate("test");
    c.use_rslora = true;
    EXPECT_DOUBLE_EQ(c.scale(), 16.0 / std::sqrt(static_cast<double>(c.rank)));
  }
  const std::string msg = error_of([] { AdapterConfig::preset("fba", 8, 16); });
  EXPECT_HAS(msg, "'fba'");
  EXPECT_HAS(msg, "ffba-aorb");
}

TEST(AdapterConfig, ValidateErrors) {
  auto err = [](AdapterConfig c) { return error_of([&] { c.validate("cfg.json"); }); };
  AdapterConfig c = AdapterConfig::preset("ffba", 4, 8);
  c.rank = 0;
  EXPECT_HAS(err(c), "'r'");
  c = AdapterConfig::preset("ffba", 4, 8);
  c.alpha = 0;
  EXPECT_HAS(err(c), "'lora_alpha'");
  c = AdapterConfig::preset("ffba", 4, 8);
  c.backward[static_cast<int>(Target::Q)] = true;
  EXPECT_HAS(err(c), "'backward_modules'");
  c = AdapterConfig::preset("ffba", 4, 8);
  c.carry[static_cast<int>(Target::Up)] = true;
  EXPECT_HAS(err(c), "'carry_modules'");
  c = AdapterConfig::preset("ffba", 4, 8);
  c.backward[static_cast<int>(Target::O)] = false;  // carry on o without B_o
  EXPECT_HAS(err(c), "carry of o_proj needs its backward");
  c = AdapterConfig::preset("ffba", 4, 8);
  c.forward[static_cast<int>(Target::Down)] = false;  // carry on down without A_down
  EXPECT_HAS(err(c), "carry of down_proj needs its forward");
  c = AdapterConfig::preset("ffba", 4, 8);
  c.forward[static_cast<int>(Target::Q)] = false;  // repeat_add without A
  EXPECT_HAS(err(c), "'repeat_add'");
  EXPECT_HAS(err(c), "cfg.json");
  // A backward adapter with no forward entry adapter in its sub-block is allowed.
  c = AdapterConfig::preset("ffba", 4, 8);
  for (Target t : {Target::Gate, Target::Up})
    c.forward[static_cast<int>(t)] = c.repeat_add[static_cast<int>(t)] = false;
  c.validate("cfg.json");
  // A forward adapter that reaches nothing.
  c = AdapterConfig::preset("ffba-aorb", 4, 8);
  c.repeat_add[static_cast<int>(Target::K)] = false;
  c.backward[static_cast<int>(Target::O)] = false;
  EXPECT_HAS(err(c), "no effect");
  c = AdapterConfig::preset("lora", 4, 8);
  c.carry[static_cast<int>(Target::O)] = true;
  EXPECT_HAS(err(c), "LoRA");
}

TEST(AdapterConfig, ParseTargets) {
  EXPECT_EQ(parse_targets("q,k,v,o,gate,up,down"), kAll);
  EXPECT_EQ(parse_targets("q, v"), (Mask{true, false, true, false, false, false, false}));
  EXPECT_EQ(parse_targets("down_proj"), (Mask{false, false, false, false, false, false, true}));
  EXPECT_HAS(error_of([] { parse_targets("q,x"); }), "'x'");
  EXPECT_HAS(error_of([] { parse_targets(""); }), "empty");
  EXPECT_HAS(error_of([] { parse_targets("q,,v"); }), "empty");
  EXPECT_HAS(error_of([] { parse_targets("q,"); }), "empty");
}

TEST(AdapterConfig, LoraJsonHasPeftKeys) {
  const Json j = AdapterConfig::preset("lora", 8, 16).to_json();
  std::set<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.insert(it.key());
  const std::set<std::string> expected = {"peft_type",
                                          "task_type",
                                          "r",
                                          "lora_alpha",
                                          "use_rslora",
                                          "target_modules",
                                          "lora_dropout",
                                          "bias",
                                          "fan_in_fan_out",
                                          "rank_pattern",
                                          "alpha_pattern",
                                          "inference_mode",
                                          "base_model_name_or_path"};
  EXPECT_EQ(keys, expected);
  EXPECT_EQ(j["peft_type"], "LORA");
  EXPECT_EQ(j["task_type"], "CAUSAL_LM");
  EXPECT_EQ(j["r"], 8);
  EXPECT_EQ(j["lora_alpha"].dump(), "16");
  EXPECT_EQ(j["bias"], "none");
  EXPECT_EQ(j["target_modules"], Json({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}));
  EXPECT_TRUE(j["rank_pattern"].is_object() && j["rank_pattern"].empty());
}

TEST(AdapterConfig, JsonRoundTrip) {
  for (const auto* v : {"lora", "pf-lora", "lora-merged"}) {
    AdapterConfig c = AdapterConfig::preset(v, 8, 12.5, {true, false, true, true, false, false, true});
    c.use_rslora = true;
    const AdapterConfig back = AdapterConfig::from_json(c.to_json(), "x.json");
    expect_same_config(c, back);
    EXPECT_EQ(back.variant, "lora");
    EXPECT_EQ(back.lora_execution, LoraExecution::Unfused);
  }
  for (const auto* v : {"ffa", "ffba", "ffba-aorb", "ffba-qg", "ffba-relu"}) {
    AdapterConfig c = AdapterConfig::preset(v, 4, 8);
    c.init = AdapterInit::Zero;
    const Json j = c.to_json();
    EXPECT_EQ(j["peft_type"], "FLORA");
    EXPECT_EQ(j["flora_variant"], v);
    const AdapterConfig back = AdapterConfig::from_json(j, "x.json");
    expect_same_config(c, back);
    EXPECT_EQ(back.variant, v);
    EXPECT_EQ(back.init, AdapterInit::Zero);
  }
  AdapterConfig g = AdapterConfig::preset("ffba", 4, 8);
  g.nonlinearity = Nonlinearity::GELU;
  EXPECT_EQ(AdapterConfig::from_json(g.to_json(), "x").nonlinearity, Nonlinearity::GELU);
}

TEST(AdapterConfig, JsonErrors) {
  auto err = [](Json j) { return error_of([&] { AdapterConfig::from_json(j, "dir/adapter_config.json"); }); };
  Json j = AdapterConfig::preset("lora", 8, 16).to_json();
  Json k = j;
  k["peft_type"] = "IA3";
  EXPECT_HAS(err(k), "'peft_type'");
  k = j;
  k["target_modules"] = ".*proj";
  EXPECT_HAS(err(k), "regular expression");
  EXPECT_HAS(err(k), "dir/adapter_config.json");
  k = j;
  k["rank_pattern"] = {{"q_proj", 4}};
  EXPECT_HAS(err(k), "not supported yet");
  EXPECT_HAS(err(k), "'rank_pattern'");
  k = j;
  k["alpha_pattern"] = {{"q_proj", 4}};
  EXPECT_HAS(err(k), "'alpha_pattern'");
  k = j;
  k["target_modules"] = {"q_proj", "lm_head"};
  EXPECT_HAS(err(k), "'lm_head'");
  k = j;
  k.erase("r");
  EXPECT_HAS(err(k), "'r'");
  k = j;
  k["r"] = 0;
  EXPECT_HAS(err(k), "'r'");
  Json f = AdapterConfig::preset("ffba", 4, 8).to_json();
  f["nonlinearity"] = "tanh";
  EXPECT_HAS(err(f), "'nonlinearity'");
  f = AdapterConfig::preset("ffba", 4, 8).to_json();
  f["carry_modules"] = {"q_proj"};
  EXPECT_HAS(err(f), "'carry_modules'");
}

// ---------------------------------------------------------------------------
// Adapter files

TEST_F(Adapters, TensorNamesArePefts) {
  const AdapterConfig lora = AdapterConfig::preset("lora", 8, 16);
  EXPECT_EQ(Adapter::tensor_name(lora, 3, Target::Q, 'A'),
            "base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight");
  EXPECT_EQ(Adapter::tensor_name(lora, 0, Target::Down, 'B'),
            "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight");
  const AdapterConfig ffba = AdapterConfig::preset("ffba", 8, 16);
  EXPECT_EQ(Adapter::tensor_name(ffba, 1, Target::O, 'C'),
            "base_model.model.model.layers.1.self_attn.o_proj.flora_C.weight");
  EXPECT_EQ(Adapter::tensor_name(ffba, 1, Target::Gate, 'A'),
            "base_model.model.model.layers.1.mlp.gate_proj.flora_A.weight");
}

TEST_F(Adapters, ShapesAndParameterCounts) {
  EXPECT_EQ(target_in(tiny, Target::O), tiny.q_dim());
  EXPECT_EQ(target_out(tiny, Target::K), tiny.kv_dim());
  EXPECT_EQ(target_in(tiny, Target::Down), tiny.intermediate_size);
  EXPECT_EQ(target_out(tiny, Target::Up), tiny.intermediate_size);

  const Adapter lora = Adapter::create(AdapterConfig::preset("lora", 4, 8), tiny, 1);
  int64_t expected = 0;
  for (Target t : kAllTargets) expected += 4 * (target_in(tiny, t) + target_out(tiny, t));
  expected *= tiny.num_hidden_layers;
  EXPECT_EQ(lora.parameter_count(), expected);
  EXPECT_EQ(lora.parameter_count(), 9920);  // 2 layers x 4 x (128 + 96 + 96 + 128 + 264 + 264 + 264)
  EXPECT_EQ(lora.bytes(), 9920u * 4);
  EXPECT_EQ(lora.layers[0].B[static_cast<int>(Target::Gate)].rows, 200);
  EXPECT_EQ(lora.layers[1].A[static_cast<int>(Target::Down)].cols, 200);

  // ffba rank 4: A on all 7 (4 x in), B on o, down (out x 4), C on o, down (4 x 4).
  const Adapter ffba = Adapter::create(AdapterConfig::preset("ffba", 4, 8), tiny, 1);
  int64_t f = 0;
  for (Target t : kAllTargets) f += 4 * target_in(tiny, t);
  f += 4 * 64 + 4 * 64 + 2 * 16;
  EXPECT_EQ(ffba.parameter_count(), 2 * f);
  // ffa rank 4 stores rank 8 A on all 7, nothing else.
  const Adapter ffa = Adapter::create(AdapterConfig::preset("ffa", 4, 8), tiny, 1);
  int64_t a = 0;
  for (Target t : kAllTargets) a += 8 * target_in(tiny, t);
  EXPECT_EQ(ffa.parameter_count(), 2 * a);
  EXPECT_TRUE(ffa.layers[0].B[static_cast<int>(Target::O)].empty());
}

TEST_F(Adapters, Inits) {
  AdapterConfig c = AdapterConfig::preset("ffba", 4, 8);
  const Adapter lora = Adapter::create(c, tiny, 7);
  const AdapterMatrix& A = lora.layers[0].A[static_cast<int>(Target::Down)];
  const float bound = 1.0f / std::sqrt(200.0f);
  float max_abs = 0;
  for (float v : A.data) max_abs = std::max(max_abs, std::fabs(v));
  EXPECT_LE(max_abs, bound);
  EXPECT_GT(max_abs, 0.8f * bound);
  for (float v : lora.layers[1].B[static_cast<int>(Target::O)].data) EXPECT_EQ(v, 0.0f);
  for (float v : lora.layers[1].C[static_cast<int>(Target::Down)].data) EXPECT_EQ(v, 0.0f);
  // Deterministic per seed, different across seeds and tensors.
  expect_same_values(lora, Adapter::create(c, tiny, 7));
  EXPECT_NE(A.data, Adapter::create(c, tiny, 8).layers[0].A[static_cast<int>(Target::Down)].data);
  EXPECT_NE(lora.layers[0].A[0].data, lora.layers[1].A[0].data);

  c.init = AdapterInit::Zero;
  const Adapter zero = Adapter::create(c, tiny, 7);
  for (const auto& la : zero.layers)
    for (int i = 0; i < kTargets; ++i)
      for (float v : la.A[i].data) EXPECT_EQ(v, 0.0f);

  c.init = AdapterInit::Random;
  const Adapter rnd = Adapter::create(c, tiny, 7);
  const AdapterMatrix& B = rnd.layers[0].B[static_cast<int>(Target::O)];  // fan_in r = 4
  double sq = 0;
  for (float v : B.data) sq += double(v) * v;
  EXPECT_NEAR(std::sqrt(sq / B.data.size()), 0.5, 0.05);
  for (float v : rnd.layers[0].C[static_cast<int>(Target::O)].data) EXPECT_NE(v, 0.0f);
}

TEST_F(Adapters, SaveLoadRoundTrip) {
  for (const auto* v : {"lora", "ffba", "ffa", "ffba-aorb"}) {
    AdapterConfig c = AdapterConfig::preset(v, 4, 8);
    c.init = AdapterInit::Random;
    const Adapter a = Adapter::create(c, tiny, 11);
    const std::string dir = path(std::string(v) + "/nested");
    a.save(dir);
    EXPECT_TRUE(file_exists(dir + "/adapter_config.json"));
    const Adapter b = Adapter::load(dir, tiny);
    expect_same_config(a.config, b.config);
    expect_same_values(a, b);
    EXPECT_EQ(a.parameter_count(), b.parameter_count());
    // Only the two files, no temporaries.
    EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator{}), 2);
  }
}

TEST_F(Adapters, LoadsBf16AndF16) {
  AdapterConfig c = AdapterConfig::preset("lora", 2, 4, {true, false, false, false, false, false, false});
  c.init = AdapterInit::Random;
  const Adapter a = Adapter::create(c, tiny, 3);
  const std::string dir = path("half");
  a.save(dir);
  std::vector<std::vector<uint16_t>> store;
  std::vector<TensorToWrite> ts = tensors_of(a);
  for (size_t i = 0; i < ts.size(); ++i) {
    const float* src = static_cast<const float*>(ts[i].data);
    const size_t n = static_cast<size_t>(ts[i].shape[0] * ts[i].shape[1]);
    std::vector<uint16_t> h(n);
    const bool bf = i % 2 == 0;
    for (size_t k = 0; k < n; ++k) h[k] = bf ? f32_to_bf16(src[k]) : f32_to_f16(src[k]);
    store.push_back(std::move(h));
    ts[i].dtype = bf ? DType::BF16 : DType::F16;
    ts[i].data = store.back().data();
  }
  write_tensors(dir, ts);
  const Adapter b = Adapter::load(dir, tiny);
  const auto& x = a.layers[1].A[0].data;
  const auto& y = b.layers[1].A[0].data;
  ASSERT_EQ(x.size(), y.size());
  for (size_t k = 0; k < x.size(); ++k) EXPECT_NEAR(x[k], y[k], std::fabs(x[k]) * 1e-2 + 1e-6);
}

TEST_F(Adapters, LoadErrors) {
  AdapterConfig c = AdapterConfig::preset("lora", 4, 8);
  c.init = AdapterInit::Random;
  const Adapter a = Adapter::create(c, tiny, 5);
  const std::string dir = path("bad");
  const std::string st = dir + "/adapter_model.safetensors";
  const std::string cj = dir + "/adapter_config.json";
  auto load_error = [&] { return error_of([&] { Adapter::load(dir, tiny); }); };

  // Missing adapter_config.json.
  std::string msg = load_error();
  EXPECT_HAS(msg, cj);
  EXPECT_HAS(msg, "not found");

  a.save(dir);
  const std::string victim = Adapter::tensor_name(c, 1, Target::V, 'B');
  // Missing tensor.
  std::vector<TensorToWrite> ts = tensors_of(a);
  std::vector<TensorToWrite> fewer;
  for (const auto& t : ts)
    if (t.name != victim) fewer.push_back(t);
  write_tensors(dir, fewer);
  msg = load_error();
  EXPECT_HAS(msg, st);
  EXPECT_HAS(msg, victim);
  EXPECT_HAS(msg, "missing");

  // Extra tensor (a layer the model does not have).
  std::vector<TensorToWrite> more = ts;
  const std::string extra = Adapter::tensor_name(c, 2, Target::Q, 'A');
  more.push_back({extra, DType::F32, ts[0].shape, ts[0].data});
  write_tensors(dir, more);
  msg = load_error();
  EXPECT_HAS(msg, st);
  EXPECT_HAS(msg, extra);
  EXPECT_HAS(msg, "unexpected");

  // Wrong shape (rank 4 in the config, transposed A).
  std::vector<TensorToWrite> shaped = ts;
  for (auto& t : shaped)
    if (t.name == victim) t.shape = {t.shape[1], t.shape[0]};
  write_tensors(dir, shaped);
  msg = load_error();
  EXPECT_HAS(msg, st);
  EXPECT_HAS(msg, victim);
  EXPECT_HAS(msg, "expected shape [32, 4], found [4, 32]");

  // Wrong dtype.
  std::vector<TensorToWrite> typed = ts;
  for (auto& t : typed)
    if (t.name == victim) t.dtype = DType::I32;
  write_tensors(dir, typed);
  msg = load_error();
  EXPECT_HAS(msg, st);
  EXPECT_HAS(msg, victim);
  EXPECT_HAS(msg, "I32");

  // Config errors name adapter_config.json and the key.
  write_tensors(dir, ts);
  Adapter::load(dir, tiny);
  edit_config(dir, [](Json& j) { j["target_modules"] = "^(?!.*lm_head).*proj$"; });
  msg = load_error();
  EXPECT_HAS(msg, cj);
  EXPECT_HAS(msg, "'target_modules'");
  edit_config(dir, [](Json& j) { j["target_modules"] = Json({"q_proj", "embed_tokens"}); });
  msg = load_error();
  EXPECT_HAS(msg, cj);
  EXPECT_HAS(msg, "'embed_tokens'");
  edit_config(dir, [](Json& j) {
    j["target_modules"] = Json({"q_proj"});
    j["rank_pattern"] = {{"q_proj", 8}};
  });
  msg = load_error();
  EXPECT_HAS(msg, cj);
  EXPECT_HAS(msg, "'rank_pattern'");
  // A config asking for fewer modules than the file holds: the rest are unexpected.
  edit_config(dir, [](Json& j) { j["rank_pattern"] = Json::object(); });
  msg = load_error();
  EXPECT_HAS(msg, "unexpected tensor");
  // Missing safetensors file.
  fs::remove(st);
  msg = load_error();
  EXPECT_HAS(msg, st);
}

// ---------------------------------------------------------------------------
// Merging

namespace {

double weight_at(const TensorView& t, int64_t k) {
  if (t.dtype == DType::F32) {
    float v;
    std::memcpy(&v, t.data + 4 * k, 4);
    return v;
  }
  uint16_t h;
  std::memcpy(&h, t.data + 2 * k, 2);
  return t.dtype == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

// Checks every adapted weight of `merged` against W + s * delta(i, j) of `base`,
// within `rel` of the value (rounding of the stored dtype), and every other tensor unchanged.
template <typename Delta>
void check_merged(const std::string& base_dir, const std::string& merged_dir, const Adapter& ad, double rel,
                  Delta&& delta) {
  const LlamaConfig cfg = LlamaConfig::from_file(base_dir + "/config.json");
  const TensorStore base(base_dir), merged(merged_dir);
  EXPECT_EQ(base.names(), merged.names());
  EXPECT_EQ(read_file(base_dir + "/config.json"), read_file(merged_dir + "/config.json"));
  const double s = ad.config.scale();
  for (const std::string& name : base.names()) {
    const TensorView& w = base.get(name);
    const TensorView& m = merged.get(name);
    ASSERT_EQ(w.dtype, m.dtype) << name;
    ASSERT_EQ(w.shape, m.shape) << name;
    int64_t layer = -1;
    Target target = Target::Q;
    for (int64_t l = 0; l < cfg.num_hidden_layers; ++l)
      for (Target t : kAllTargets)
        if (name == fmt::format("model.layers.{}.{}.weight", l, target_path(t))) layer = l, target = t;
    if (layer < 0 || !ad.config.forward[static_cast<int>(target)]) {
      EXPECT_EQ(0, std::memcmp(w.data, m.data, w.nbytes)) << name << " changed";
      continue;
    }
    const int64_t in = w.shape[1];
    double max_delta = 0;
    for (int64_t i = 0; i < w.shape[0]; ++i)
      for (int64_t j = 0; j < in; ++j) {
        const double want = weight_at(w, i * in + j) + s * delta(ad.layers[layer], static_cast<int>(target), i, j);
        const double got = weight_at(m, i * in + j);
        ASSERT_NEAR(got, want, std::fabs(want) * rel + 1e-30) << name << " [" << i << ", " << j << "]";
        max_delta = std::max(max_delta, std::fabs(got - weight_at(w, i * in + j)));
      }
    EXPECT_GT(max_delta, 1e-3) << name << ": the adapter changed nothing";
  }
}

}  // namespace

TEST_F(Adapters, MergeLoraF32Fixture) {
  const std::string base = std::string(FLORA_SOURCE_DIR) + "/tests/fixtures/tiny_llama/f32";
  const LlamaConfig cfg = LlamaConfig::from_file(base + "/config.json");
  AdapterConfig c = AdapterConfig::preset("lora", 4, 8, parse_targets("q,v,o,up,down"));
  c.init = AdapterInit::Random;
  const Adapter ad = Adapter::create(c, cfg, 9);
  const std::string out = path("merged");
  merge_lora_into_model(base, ad, out);
  EXPECT_TRUE(file_exists(out + "/model.safetensors"));
  check_merged(base, out, ad, 2e-7, [](const LayerAdapter& la, int m, int64_t i, int64_t j) {
    const AdapterMatrix &A = la.A[m], &B = la.B[m];
    double d = 0;
    for (int64_t k = 0; k < A.rows; ++k) d += double(B.data[i * A.rows + k]) * A.data[k * A.cols + j];
    return d;
  });
  EXPECT_HAS(error_of([&] { merge_lora_into_model(base, ad, base); }), "model directory itself");
}

TEST_F(Adapters, MergeLoraBf16AndFfa) {
  const std::string base = path("base");
  write_random_model(tiny, base, 4, DType::BF16);
  AdapterConfig c = AdapterConfig::preset("lora", 4, 8);
  c.init = AdapterInit::Random;
  const Adapter ad = Adapter::create(c, tiny, 2);
  merge_lora_into_model(base, ad, path("merged"));
  check_merged(base, path("merged"), ad, 1.0 / 256, [](const LayerAdapter& la, int m, int64_t i, int64_t j) {
    const AdapterMatrix &A = la.A[m], &B = la.B[m];
    double d = 0;
    for (int64_t k = 0; k < A.rows; ++k) d += double(B.data[i * A.rows + k]) * A.data[k * A.cols + j];
    return d;
  });

  // ffa is repeat-and-add only: W' = W + s * tile(A), row i taking A's row i mod r.
  AdapterConfig fc = AdapterConfig::preset("ffa", 2, 4);
  fc.init = AdapterInit::Random;
  const Adapter ffa = Adapter::create(fc, tiny, 2);
  merge_lora_into_model(base, ffa, path("merged_ffa"));
  check_merged(base, path("merged_ffa"), ffa, 1.0 / 256, [](const LayerAdapter& la, int m, int64_t i, int64_t j) {
    const AdapterMatrix& A = la.A[m];
    return double(A.data[(i % A.rows) * A.cols + j]);
  });

  const Adapter ffba = Adapter::create(AdapterConfig::preset("ffba", 2, 4), tiny, 2);
  const std::string msg = error_of([&] { merge_lora_into_model(base, ffba, path("nope")); });
  EXPECT_HAS(msg, "cannot be merged");
  EXPECT_FALSE(fs::exists(path("nope")));
}

// ---------------------------------------------------------------------------
// Bad values and shapes

TEST_F(Adapters, LoadRefusesNanAndInfNamingTheElement) {
  AdapterConfig c = AdapterConfig::preset("ffba", 4, 8);
  c.init = AdapterInit::Random;
  const Adapter a = Adapter::create(c, tiny, 6);
  const std::string dir = path("nonfinite");
  a.save(dir);
  const std::string st = dir + "/adapter_model.safetensors";
  const std::string victim = Adapter::tensor_name(c, 1, Target::Down, 'A');
  const float kInf = std::numeric_limits<float>::infinity();
  for (DType dtype : {DType::F32, DType::BF16, DType::F16})
    for (auto [bad, what] : {std::pair{std::numeric_limits<float>::quiet_NaN(), "NaN"}, std::pair{kInf, "+Inf"},
                             std::pair{-kInf, "-Inf"}}) {
      std::vector<TensorToWrite> ts = tensors_of(a);
      std::vector<std::vector<uint8_t>> store;
      for (auto& t : ts) {
        const float* src = static_cast<const float*>(t.data);
        const size_t n = static_cast<size_t>(t.shape[0] * t.shape[1]);
        std::vector<float> f(src, src + n);
        if (t.name == victim) f[2 * t.shape[1] + 3] = bad;  // row 2, column 3
        std::vector<uint8_t>& bytes = store.emplace_back(n * dtype_size(dtype));
        for (size_t k = 0; k < n; ++k) {
          if (dtype == DType::F32) {
            std::memcpy(bytes.data() + 4 * k, &f[k], 4);
          } else {
            const uint16_t h = dtype == DType::BF16 ? f32_to_bf16(f[k]) : f32_to_f16(f[k]);
            std::memcpy(bytes.data() + 2 * k, &h, 2);
          }
        }
        t.dtype = dtype;
        t.data = bytes.data();
      }
      write_tensors(dir, ts);
      const std::string msg = error_of([&] { Adapter::load(dir, tiny); });
      const int64_t cols = target_in(tiny, Target::Down);
      EXPECT_HAS(msg, st);
      EXPECT_HAS(msg, "'" + victim + "'");
      EXPECT_HAS(msg, fmt::format("element {} (row 2, column 3) is {}", 2 * cols + 3, what));
    }
}

// The training view points at the adapter's own values and its gradient
// buffers (no copy: an optimiser step on the adapter is what the next pass
// reads), and refuses gradients shaped otherwise, naming the matrix.
TEST_F(Adapters, TrainViewPointsIntoTheAdapterAndChecksGradientShapes) {
  AdapterConfig c = AdapterConfig::preset("ffba", 4, 8);
  c.init = AdapterInit::Random;
  const Adapter adapter = Adapter::create(c, tiny, 3);
  Adapter grads = adapter.zeros_like();
  const AdapterTrainView v = make_adapter_train_view(adapter, grads);
  ASSERT_EQ(v.grads.size(), adapter.layers.size());
  for (size_t l = 0; l < adapter.layers.size(); ++l)
    for (int m = 0; m < kTargets; ++m) {
      const AdapterMatrix& A = adapter.layers[l].A[m];
      EXPECT_EQ(v.values.layers[l].A[m].data, A.empty() ? nullptr : A.data.data());
      EXPECT_EQ(v.grads[l].A[m], A.empty() ? nullptr : grads.layers[l].A[m].data.data());
      EXPECT_EQ(v.grads[l].B[m], adapter.layers[l].B[m].empty() ? nullptr : grads.layers[l].B[m].data.data());
    }
  EXPECT_FALSE(make_adapter_train_view(nullptr, nullptr).has_value());
  Adapter wrong = adapter.zeros_like();
  wrong.layers[1].A[static_cast<int>(Target::Q)].rows += 1;
  EXPECT_HAS(error_of([&] { make_adapter_train_view(adapter, wrong); }),
             "adapter gradients: layer 1 A of q_proj: (5, 64), expected (4, 64)");
  wrong.layers.pop_back();
  EXPECT_HAS(error_of([&] { make_adapter_train_view(adapter, wrong); }), "1 layers, expected 2");
}

TEST_F(Adapters, ShapesAreCheckedByOneCheckEverywhere) {
  const std::string base = path("base");
  write_random_model(tiny, base, 4, DType::BF16);
  const auto model = LlamaModel::load(base);
  AdapterConfig c = AdapterConfig::preset("lora", 4, 8);
  c.init = AdapterInit::Random;
  const Adapter good = Adapter::create(c, tiny, 2);
  check_adapter_fits(good, tiny, base);
  // Every way to apply a LoRA: merged into a directory, merged in memory,
  // attached unfused. Each gives the one message of check_adapter_fits.
  auto errors = [&](const Adapter& bad) {
    std::vector<std::string> out;
    out.push_back(error_of([&] { merge_lora_into_model(base, bad, path("merged")); }));
    out.push_back(error_of([&] { merge_lora_layers(*model, bad); }));
    out.push_back(error_of([&] { AttachedAdapter attached(*model, bad, LoraExecution::Merged); }));
    out.push_back(error_of([&] { AttachedAdapter attached(*model, bad, LoraExecution::Unfused); }));
    for (size_t i = 1; i < out.size(); ++i) EXPECT_EQ(out[i], out[0]);
    EXPECT_FALSE(fs::exists(path("merged")));
    return out[0];
  };

  Adapter fewer = good;
  fewer.layers.pop_back();
  std::string msg = errors(fewer);
  EXPECT_HAS(msg, "adapter 'lora'");
  EXPECT_HAS(msg, "expected 2 layers");
  EXPECT_HAS(msg, base);
  EXPECT_HAS(msg, "found 1");

  Adapter wide = good;  // B of layer 1's v_proj: (kv_dim, r) expected, r + 1 columns found
  AdapterMatrix& B = wide.layers[1].B[static_cast<int>(Target::V)];
  B.cols += 1;
  B.data.resize(static_cast<size_t>(B.rows * B.cols));
  msg = errors(wide);
  EXPECT_HAS(msg, "layer 1 v_proj lora_B");
  EXPECT_HAS(msg, fmt::format("expected {}", format_shape({tiny.kv_dim(), 4})));
  EXPECT_HAS(msg, fmt::format("found {}", format_shape({tiny.kv_dim(), 5})));

  Adapter missing = good;  // no A on layer 0's gate_proj
  missing.layers[0].A[static_cast<int>(Target::Gate)] = AdapterMatrix{};
  msg = errors(missing);
  EXPECT_HAS(msg, "layer 0 gate_proj lora_A");
  EXPECT_HAS(msg, "found no matrix");

  Adapter short_data = good;  // the shape is right, the values are too few
  short_data.layers[0].A[static_cast<int>(Target::Q)].data.pop_back();
  msg = errors(short_data);
  EXPECT_HAS(msg, "layer 0 q_proj lora_A");
  EXPECT_HAS(msg, "values");

  // A loaded adapter is named by its directory.
  good.save(path("saved"));
  Adapter loaded = Adapter::load(path("saved"), tiny);
  loaded.layers.pop_back();
  EXPECT_HAS(errors(loaded), "adapter " + path("saved"));
}
