// An adapter per row: one Forward call holds chunks of several adapters (every
// mode: FLoRA variants, LoRA unfused and partially fused) and of the base
// model, on the tiny fixture model with the fixture adapters attached to it at
// once. What must hold:
//   - each chunk's logits equal those of its sequence run alone with its
//     adapter, bit for bit: rows are independent in every product (the base
//     kernels' guarantee, docs/architecture.md), and each adapter's terms are
//     computed over its own runs of rows only;
//   - FLoRA rows of any mix add no synchronisation point (the pool's counter);
//   - a chunk's scale reaches every adapter term (scale 0 gives the base model);
//   - an adapter can be detached (destroyed) between calls;
//   - batched generation takes an adapter per prompt;
//   - a bad adapter or scale is one clear error, before any state changes.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "adapters/exec.h"
#include "compare.h"
#include "model/forward.h"
#include "model/generate.h"
#include "model/weights.h"
#include "scratch_dir.h"
#include "tiny_prompts.h"
#include "util/error.h"

namespace flora {
namespace {

const std::string kFixtures = std::string(FLORA_SOURCE_DIR) + "/tests/fixtures/tiny_llama/";

// The shared prompts and one more, so that six adapters and the base each have one.
const std::vector<std::vector<int32_t>> kPrompts = [] {
  auto p = test::kTinyPrompts;
  p.push_back({379, 70, 71, 72});
  return p;
}();

std::unique_ptr<AttachedAdapter> attach(const LlamaModel& model, const std::string& variant) {
  const bool lora = variant == "lora" || variant == "pf-lora";
  Adapter adapter = Adapter::load(kFixtures + "adapters/" + (lora ? "lora" : variant), model.config());
  return std::make_unique<AttachedAdapter>(model, std::move(adapter),
                                           lora ? *lora_execution_of(variant) : LoraExecution::Unfused);
}

double max_diff(const float* a, const float* b, int64_t n) { return test::max_abs_error(a, b, static_cast<size_t>(n)); }

// Logits of a prompt's prefill, then of each decode step, for one sequence alone.
std::vector<std::vector<float>> alone(const LlamaModel& model, ThreadPool& pool, const AdapterExec* exec,
                                      const std::vector<int32_t>& prompt, const std::vector<int32_t>& steps) {
  const int64_t V = model.config().vocab_size;
  Forward f(model, pool, 64, exec);
  std::vector<std::vector<float>> out;
  const float* l = f.forward(prompt.data(), static_cast<int64_t>(prompt.size()), false);
  out.emplace_back(l, l + V);
  for (const int32_t& t : steps) {
    l = f.forward(&t, 1, false);
    out.emplace_back(l, l + V);
  }
  return out;
}

class AdapterRows : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = LlamaModel::load(kFixtures + "f32");
    for (const char* v : {"ffba", "lora", "ffa", "pf-lora", "ffba-aorb", "ffba-qg"})
      adapters_.push_back(attach(*model_, v));
  }
  // Row i of a call: prompt i with adapter i (the last prompt: the base model).
  const AdapterExec* adapter_of(size_t i) const { return i < adapters_.size() ? adapters_[i]->exec() : nullptr; }

  std::shared_ptr<LlamaModel> model_;
  std::vector<std::unique_ptr<AttachedAdapter>> adapters_;
};

TEST_F(AdapterRows, EachChunkRunsItsOwnAdapterBitForBit) {
  const int64_t V = model_->config().vocab_size;
  ThreadPool pool(2);
  const std::vector<int32_t> steps = {101, 7, 250};
  const size_t n = kPrompts.size();
  std::vector<std::vector<std::vector<float>>> want;
  for (size_t i = 0; i < n; ++i) want.push_back(alone(*model_, pool, adapter_of(i), kPrompts[i], steps));
  // The Forward's own adapter (ffba) must not leak into chunks that name another one or none.
  Forward batched(*model_, pool, 64, adapters_[0]->exec(), nullptr, static_cast<int>(n));
  std::vector<Forward::Chunk> chunks;
  for (size_t i = 0; i < n; ++i)
    chunks.emplace_back(static_cast<int>(i), kPrompts[i].data(), static_cast<int64_t>(kPrompts[i].size()),
                        adapter_of(i));
  const float* l = batched.forward_batch(chunks, false);
  for (size_t i = 0; i < n; ++i) EXPECT_EQ(max_diff(l + i * V, want[i][0].data(), V), 0.0) << "prefill " << i;
  for (size_t k = 0; k < steps.size(); ++k) {
    // Decode rows in another order than the slots, so that runs of one adapter are not the call's first rows.
    chunks.clear();
    for (size_t j = 0; j < n; ++j) {
      const size_t i = (j + k + 1) % n;
      chunks.emplace_back(static_cast<int>(i), &steps[k], 1, adapter_of(i));
    }
    l = batched.forward_batch(chunks, false);
    for (size_t j = 0; j < n; ++j) {
      const size_t i = (j + k + 1) % n;
      EXPECT_EQ(max_diff(l + j * V, want[i][k + 1].data(), V), 0.0) << "step " << k << " of prompt " << i;
    }
  }
}

// One adapter in runs that are not contiguous (a, b, a), and rows of one
// adapter at two scales: each run keeps its own rows and scale.
TEST_F(AdapterRows, SplitRunsAndPerChunkScales) {
  const int64_t V = model_->config().vocab_size;
  ThreadPool pool(2);
  const AdapterExec* ffba = adapters_[0]->exec();
  const AdapterExec* lora = adapters_[1]->exec();
  AdapterExec ffba_half = *ffba;  // the same matrices, half the scale
  ffba_half.scale = ffba->scale / 2;
  Forward f(*model_, pool, 32, nullptr, nullptr, 3);
  const float* l = f.forward_batch({{0, kPrompts[0].data(), 5, ffba},
                                    {1, kPrompts[2].data(), 2, lora},
                                    {2, kPrompts[3].data(), 9, ffba, ffba->scale / 2}},
                                   false);
  const std::vector<float> got(l, l + 3 * V);
  EXPECT_EQ(max_diff(got.data(), alone(*model_, pool, ffba, kPrompts[0], {})[0].data(), V), 0.0);
  EXPECT_EQ(max_diff(got.data() + V, alone(*model_, pool, lora, kPrompts[2], {})[0].data(), V), 0.0);
  EXPECT_EQ(max_diff(got.data() + 2 * V, alone(*model_, pool, &ffba_half, kPrompts[3], {})[0].data(), V), 0.0);
  const std::vector<float> full = alone(*model_, pool, ffba, kPrompts[3], {})[0];
  EXPECT_GT(max_diff(got.data() + 2 * V, full.data(), V), 1e-3) << "the chunk's scale was not applied";
}

// Scale 0 must zero every adapter term, whatever the mode: the base logits exactly.
TEST_F(AdapterRows, ZeroScaleGivesTheBaseModel) {
  const int64_t V = model_->config().vocab_size;
  ThreadPool pool(2);
  const std::vector<float> base = alone(*model_, pool, nullptr, kPrompts[1], {})[0];
  for (size_t i = 0; i < adapters_.size(); ++i) {
    Forward f(*model_, pool, 32);
    const float* l = f.forward_batch({{0, kPrompts[1].data(), 21, adapters_[i]->exec(), 0.0f}}, false);
    EXPECT_EQ(max_diff(l, base.data(), V), 0.0) << adapters_[i]->variant();
    const std::vector<float> with = alone(*model_, pool, adapters_[i]->exec(), kPrompts[1], {})[0];
    EXPECT_GT(max_diff(with.data(), base.data(), V), 1e-3) << adapters_[i]->variant() << ": the adapter should matter";
  }
}

// FLoRA's terms ride in the base regions: a decode step of rows of four FLoRA
// variants and the base has the base model's synchronisation points; each
// LoRA adapter added to the mix adds its own regions.
TEST_F(AdapterRows, FloraRowsOfAnyMixAddNoSyncPoint) {
  ThreadPool pool(2);
  const int64_t L = model_->config().num_hidden_layers;
  const int32_t tok = 9;
  auto decode_syncs = [&](const std::vector<const AdapterExec*>& row_adapters) {
    Forward f(*model_, pool, 32, nullptr, nullptr, static_cast<int>(row_adapters.size()));
    std::vector<Forward::Chunk> chunks;
    for (size_t i = 0; i < row_adapters.size(); ++i)
      chunks.emplace_back(static_cast<int>(i), kPrompts[i].data(), static_cast<int64_t>(kPrompts[i].size()),
                          row_adapters[i]);
    f.forward_batch(chunks, false);
    for (auto& c : chunks) c = Forward::Chunk(c.slot, &tok, 1, c.adapter);
    f.forward_batch(chunks, false);
    return f.last_sync_points();
  };
  const AdapterExec *ffba = adapters_[0]->exec(), *lora = adapters_[1]->exec(), *ffa = adapters_[2]->exec();
  const AdapterExec *pf = adapters_[3]->exec(), *aorb = adapters_[4]->exec(), *qg = adapters_[5]->exec();
  EXPECT_EQ(decode_syncs({nullptr}), static_cast<uint64_t>(5 * L + 1));
  EXPECT_EQ(decode_syncs({ffba, ffa, nullptr, aorb, qg, ffba}), static_cast<uint64_t>(5 * L + 1));
  // The single-adapter counts of test_adapter_forward.cpp: LoRA unfused 21 per layer, partially fused 9.
  EXPECT_EQ(decode_syncs({ffba, lora, ffa}), static_cast<uint64_t>(21 * L + 1));
  EXPECT_EQ(decode_syncs({pf, ffba, nullptr}), static_cast<uint64_t>(9 * L + 1));
}

// Detaching is destroying the AttachedAdapter: a Forward that ran it keeps no
// use of it (ASan would see one) and runs other adapters on.
TEST_F(AdapterRows, AnAdapterCanBeDetachedBetweenCalls) {
  const int64_t V = model_->config().vocab_size;
  ThreadPool pool(2);
  Forward f(*model_, pool, 32, nullptr, nullptr, 2);
  {
    auto temporary = attach(*model_, "ffba-relu");
    f.forward_batch({{0, kPrompts[0].data(), 5, temporary->exec()}, {1, kPrompts[2].data(), 2, nullptr}}, false);
  }
  f.reset();
  const float* l = f.forward_batch({{0, kPrompts[0].data(), 5, adapters_[4]->exec()}}, false);
  EXPECT_EQ(max_diff(l, alone(*model_, pool, adapters_[4]->exec(), kPrompts[0], {})[0].data(), V), 0.0);
}

TEST_F(AdapterRows, ClearErrorsBeforeAnyChange) {
  ThreadPool pool(1);
  Forward f(*model_, pool, 16, nullptr, nullptr, 2);
  AdapterExec short_exec = *adapters_[0]->exec();
  short_exec.layers.pop_back();
  EXPECT_NE(error_of([&] {
              f.forward_batch({{0, kPrompts[0].data(), 5}, {1, kPrompts[2].data(), 2, &short_exec}}, false);
            }).find("slot 1: the adapter has 1 layers of rank 4, expected 2 layers (the model's) of rank > 0"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              f.forward_batch({{0, kPrompts[0].data(), 5, adapters_[0]->exec(), NAN}}, false);
            }).find("slot 0: adapter scale nan is not finite"),
            std::string::npos);
  // An adapter made for another model (another width) is refused, not read out of bounds.
  AdapterExec other_model = *adapters_[0]->exec();
  other_model.layers[1].A[index(Target::Q)].cols += 1;
  EXPECT_NE(error_of([&] {
              f.forward_batch({{1, kPrompts[2].data(), 2, &other_model}}, false);
            }).find("slot 1: adapter layer 1 q A: expected (4, 64) for this model (r = 4), found (4, 65)"),
            std::string::npos);
  AdapterExec missing = *adapters_[1]->exec();  // LoRA: a B where there is an A
  missing.layers[0].B[index(Target::Down)] = MatrixRef{};
  EXPECT_NE(error_of([&] {
              f.forward_batch({{0, kPrompts[2].data(), 2, &missing}}, false);
            }).find("slot 0: adapter layer 0 down B: expected (64, 4) for this model (r = 4), found no matrix"),
            std::string::npos);
  EXPECT_EQ(f.position(0), 0);
  EXPECT_EQ(f.position(1), 0);
}

// Batched generation with an adapter per prompt (the server's loop): greedy
// tokens equal generate() of each prompt alone with its adapter, at 1 and 3
// slots, as prompts of different adapters join and leave the batch.
TEST_F(AdapterRows, BatchedGenerationWithAnAdapterPerPrompt) {
  ThreadPool pool(2);
  const int64_t max_new = 6;
  const std::vector<int32_t> stop = {380};
  std::vector<const AdapterExec*> per_prompt;
  auto alone_tokens = [&](const AdapterExec* exec, const std::vector<int32_t>& prompt) {
    Forward single(*model_, pool, 40, exec);
    Sampler greedy(SamplerParams{0.0f, 40, 0.95f, 0});
    std::vector<int32_t> out;
    generate(single, prompt, max_new, greedy, stop, [&](int32_t id) { out.push_back(id); });
    return out;
  };
  std::vector<std::vector<int32_t>> want;
  int differ_from_base = 0;  // prompts whose adapter changes the continuation: else the test shows nothing
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    per_prompt.push_back(adapter_of(i));
    want.push_back(alone_tokens(adapter_of(i), kPrompts[i]));
    differ_from_base += want.back() != alone_tokens(nullptr, kPrompts[i]);
  }
  EXPECT_GE(differ_from_base, 3);
  for (int slots : {1, 3}) {
    Forward batched(*model_, pool, 40, nullptr, nullptr, slots);
    BatchedGenerationOptions o;
    o.max_new_tokens = max_new;
    o.stop_ids = stop;
    o.max_prefill_tokens = 16;
    o.adapters = per_prompt;
    std::vector<std::vector<int32_t>> got(kPrompts.size());
    generate_batched(batched, kPrompts, o, [&](size_t i, SequenceResult&& r) { got[i] = r.tokens; });
    for (size_t i = 0; i < kPrompts.size(); ++i) EXPECT_EQ(got[i], want[i]) << "slots " << slots << " prompt " << i;
  }
  BatchedGenerationOptions bad;
  bad.adapters = {nullptr};
  Forward f(*model_, pool, 40);
  EXPECT_NE(error_of([&] {
              generate_batched(f, kPrompts, bad, [](size_t, SequenceResult&&) {});
            }).find("1 adapters given for 7 prompts"),
            std::string::npos);
}

}  // namespace
}  // namespace flora
