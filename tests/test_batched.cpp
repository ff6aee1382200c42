// Batched forward and generation against the single-sequence path on the tiny
// fixture model, with no adapter and with adapters run every way (FLoRA fused,
// LoRA unfused, partially fused and merged): the logits of a batched call
// equal the single-sequence logits of each sequence (within 1e-5; in practice
// bit for bit, since a row's arithmetic does not depend on the other rows),
// and batched greedy generation equals single-sequence greedy generation token
// for token at batch sizes 1, 3 and 4 with prompts of different lengths.
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
constexpr double kTolerance = 1e-5;

const std::vector<std::vector<int32_t>>& kPrompts = test::kTinyPrompts;

// A model and, optionally, an adapter attached as `variant` says.
struct ModelUnderTest {
  std::shared_ptr<LlamaModel> model;
  std::unique_ptr<AttachedAdapter> adapter;
  const AdapterExec* exec() const { return adapter ? adapter->exec() : nullptr; }
  const std::vector<LayerWeights>* layers() const { return adapter ? adapter->layers() : nullptr; }
};

ModelUnderTest make_setup(const std::string& variant) {
  ModelUnderTest s;
  s.model = LlamaModel::load(kFixtures + "f32");
  if (variant == "base") return s;
  const bool lora = variant == "lora" || variant == "pf-lora" || variant == "lora-merged";
  Adapter adapter = Adapter::load(kFixtures + "adapters/" + (lora ? "lora" : variant), s.model->config());
  s.adapter = std::make_unique<AttachedAdapter>(*s.model, std::move(adapter),
                                                lora ? *lora_execution_of(variant) : LoraExecution::Unfused);
  return s;
}

double max_diff(const float* a, const float* b, int64_t n) {
  return test::max_abs_error(a, b, static_cast<size_t>(n));
}

class Batched : public ::testing::TestWithParam<std::string> {};

// Prefill of several prompts of different lengths in one call, then decode
// steps of all of them together, then a call mixing a new prefill with decode
// rows: each chunk's logits against the same sequence run alone.
TEST_P(Batched, StepLogitsEqualSingleSequence) {
  const ModelUnderTest s = make_setup(GetParam());
  const int64_t V = s.model->config().vocab_size;
  ThreadPool pool(2);
  const size_t B = 4;
  const int steps = 3;
  const int32_t step_tokens[steps] = {101, 7, 250};
  // Single-sequence reference: prefill logits of each prompt, then those of each decode step.
  std::vector<std::vector<std::vector<float>>> want(B);
  for (size_t i = 0; i < B; ++i) {
    Forward single(*s.model, pool, 64, s.exec(), s.layers());
    const float* l = single.forward(kPrompts[i].data(), static_cast<int64_t>(kPrompts[i].size()), false);
    want[i].emplace_back(l, l + V);
    for (int k = 0; k < steps; ++k) {
      l = single.forward(&step_tokens[k], 1, false);
      want[i].emplace_back(l, l + V);
    }
  }
  Forward batched(*s.model, pool, 64, s.exec(), s.layers(), static_cast<int>(B));
  std::vector<Forward::Chunk> chunks;
  // Slots in another order than the prompts, to show that a slot is only a place.
  for (size_t i = 0; i < B; ++i)
    chunks.push_back({static_cast<int>(B - 1 - i), kPrompts[i].data(), static_cast<int64_t>(kPrompts[i].size())});
  const float* l = batched.forward_batch(chunks, false);
  for (size_t i = 0; i < B; ++i)
    EXPECT_LE(max_diff(l + i * V, want[i][0].data(), V), kTolerance) << "prefill of prompt " << i;
  for (int k = 0; k < steps; ++k) {
    chunks.clear();
    for (size_t i = 0; i < B; ++i) chunks.push_back({static_cast<int>(B - 1 - i), &step_tokens[k], 1});
    l = batched.forward_batch(chunks, false);
    for (size_t i = 0; i < B; ++i)
      EXPECT_LE(max_diff(l + i * V, want[i][k + 1].data(), V), kTolerance) << "step " << k << " of prompt " << i;
  }
  for (size_t i = 0; i < B; ++i)
    EXPECT_EQ(batched.position(static_cast<int>(B - 1 - i)), static_cast<int64_t>(kPrompts[i].size()) + steps);

  // A new prompt in slot 0 (prompt 4, 18 tokens) beside one decode row of slot 2 (prompt 1).
  Forward single(*s.model, pool, 64, s.exec(), s.layers());
  const float* w = single.forward(kPrompts[4].data(), static_cast<int64_t>(kPrompts[4].size()), false);
  const std::vector<float> want_new(w, w + V);
  Forward single1(*s.model, pool, 64, s.exec(), s.layers());
  single1.forward(kPrompts[1].data(), static_cast<int64_t>(kPrompts[1].size()), false);
  for (int k = 0; k < steps; ++k) single1.forward(&step_tokens[k], 1, false);
  const int32_t extra = 33;
  w = single1.forward(&extra, 1, false);
  const std::vector<float> want_row(w, w + V);
  batched.reset(0);
  l = batched.forward_batch({{2, &extra, 1}, {0, kPrompts[4].data(), static_cast<int64_t>(kPrompts[4].size())}}, false);
  EXPECT_LE(max_diff(l, want_row.data(), V), kTolerance) << "decode row beside a prefill";
  EXPECT_LE(max_diff(l + V, want_new.data(), V), kTolerance) << "prefill beside a decode row";
}

// all_logits: every row of every chunk, chunk after chunk.
TEST_P(Batched, AllLogitsEqualSingleSequence) {
  const ModelUnderTest s = make_setup(GetParam());
  const int64_t V = s.model->config().vocab_size;
  ThreadPool pool(3);
  Forward batched(*s.model, pool, 32, s.exec(), s.layers(), 3);
  std::vector<Forward::Chunk> chunks;
  int64_t rows = 0;
  for (int i = 0; i < 3; ++i) {
    chunks.push_back({i, kPrompts[i].data(), static_cast<int64_t>(kPrompts[i].size())});
    rows += chunks.back().n;
  }
  const float* l = batched.forward_batch(chunks, true);
  const std::vector<float> got(l, l + rows * V);
  int64_t row = 0;
  for (int i = 0; i < 3; ++i) {
    Forward single(*s.model, pool, 32, s.exec(), s.layers());
    const int64_t n = static_cast<int64_t>(kPrompts[i].size());
    const float* w = single.forward(kPrompts[i].data(), n, true);
    EXPECT_LE(max_diff(got.data() + row * V, w, n * V), kTolerance) << "prompt " << i;
    row += n;
  }
}

// Greedy generation of six prompts with 1, 3 and 4 slots equals generate() on
// each prompt alone, token for token; each sequence has its own length limit
// through the stop token, so sequences leave and join at different steps.
TEST_P(Batched, GreedyGenerationEqualsSingleSequence) {
  const ModelUnderTest s = make_setup(GetParam());
  ThreadPool pool(2);
  const int64_t max_new = 10, context = 40;
  const std::vector<int32_t> stop = {380};
  std::vector<std::vector<int32_t>> want;
  std::vector<bool> want_stopped;
  for (const auto& p : kPrompts) {
    Forward single(*s.model, pool, context, s.exec(), s.layers());
    Sampler greedy(SamplerParams{0.0f, 40, 0.95f, 0});
    std::vector<int32_t> out;
    const GenerationStats st = generate(single, p, max_new, greedy, stop, [&](int32_t id) { out.push_back(id); });
    want.push_back(out);
    want_stopped.push_back(st.stopped);
  }
  for (int slots : {1, 3, 4}) {
    Forward batched(*s.model, pool, context, s.exec(), s.layers(), slots);
    BatchedGenerationOptions o;
    o.max_new_tokens = max_new;
    o.stop_ids = stop;
    o.max_prefill_tokens = 16;  // two prompts join at a time at most: joins happen at several steps
    std::vector<SequenceResult> got(kPrompts.size());
    std::vector<int> done(kPrompts.size(), 0);
    const BatchedGenerationStats st = generate_batched(batched, kPrompts, o, [&](size_t i, SequenceResult&& r) {
      got[i] = std::move(r);
      ++done[i];
    });
    int64_t generated = 0;
    for (size_t i = 0; i < kPrompts.size(); ++i) {
      EXPECT_EQ(done[i], 1) << "slots " << slots << " prompt " << i;
      EXPECT_EQ(got[i].tokens, want[i]) << "slots " << slots << " prompt " << i;
      EXPECT_EQ(got[i].stopped, want_stopped[i]) << "slots " << slots << " prompt " << i;
      generated += static_cast<int64_t>(got[i].tokens.size());
    }
    EXPECT_EQ(st.generated_tokens, generated);
    EXPECT_LE(st.max_rows, slots - 1 + 21);  // decode rows + at most the prefill budget or one longer prompt
    if (slots > 1) {
      EXPECT_LT(st.forward_calls, generated);  // decode steps were shared
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Adapters, Batched,
                         ::testing::Values("base", "ffba", "ffa", "ffba-aorb", "lora", "pf-lora", "lora-merged"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name)
                             if (c == '-') c = '_';
                           return name;
                         });

// Seeded sampling: prompt i samples with seed + i, so batched and alone agree.
TEST(BatchedGeneration, SeededSamplingEqualsSingleSequence) {
  const ModelUnderTest s = make_setup("base");
  ThreadPool pool(2);
  const SamplerParams sampling{0.9f, 20, 0.9f, 77};
  Forward batched(*s.model, pool, 40, nullptr, nullptr, 3);
  BatchedGenerationOptions o;
  o.max_new_tokens = 8;
  o.sampling = sampling;
  std::vector<std::vector<int32_t>> got(kPrompts.size());
  generate_batched(batched, kPrompts, o, [&](size_t i, SequenceResult&& r) { got[i] = r.tokens; });
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    Forward single(*s.model, pool, 40);
    SamplerParams sp = sampling;
    sp.seed += i;
    Sampler sampler(sp);
    std::vector<int32_t> out;
    generate(single, kPrompts[i], 8, sampler, {}, [&](int32_t id) { out.push_back(id); });
    EXPECT_EQ(got[i], out) << "prompt " << i;
  }
}

TEST(BatchedGeneration, ZeroNewTokensAndContextLimit) {
  const ModelUnderTest s = make_setup("base");
  ThreadPool pool(1);
  Forward f(*s.model, pool, 24, nullptr, nullptr, 2);
  BatchedGenerationOptions o;
  o.max_new_tokens = 0;
  int calls = 0;
  generate_batched(f, kPrompts, o, [&](size_t, SequenceResult&& r) { calls += r.tokens.empty(); });
  EXPECT_EQ(calls, static_cast<int>(kPrompts.size()));
  // The context (24) ends the 21-token prompt after 4 tokens: 3 more positions
  // after the prompt's 21 hold 3 decoded inputs; the 4th token is chosen at position 24.
  o.max_new_tokens = 100;
  std::vector<size_t> lengths(kPrompts.size());
  generate_batched(f, kPrompts, o, [&](size_t i, SequenceResult&& r) { lengths[i] = r.tokens.size(); });
  EXPECT_EQ(lengths[1], 24u - 21u + 1u);
  EXPECT_EQ(lengths[0], 24u - 5u + 1u);
  const std::vector<std::vector<int32_t>> too_long = {std::vector<int32_t>(25, 7)};
  EXPECT_NE(error_of([&] {
              generate_batched(f, too_long, o, [](size_t, SequenceResult&&) {});
            }).find("prompt 1 has 25 tokens; the context holds 24"),
            std::string::npos);
}

// Truncating a slot and running again gives the logits of the shorter history.
TEST(BatchedForward, TruncateRewindsASlot) {
  const ModelUnderTest s = make_setup("ffba");
  const int64_t V = s.model->config().vocab_size;
  ThreadPool pool(2);
  Forward f(*s.model, pool, 32, s.exec(), s.layers(), 2);
  const auto& p = kPrompts[3];
  const int64_t n = static_cast<int64_t>(p.size());
  const float* l = f.forward_batch({{1, p.data(), n}}, false);
  const std::vector<float> want(l, l + V);
  f.truncate(1, 4);
  f.forward_batch({{1, p.data() + 4, n - 4}}, false);  // the same tokens again
  f.truncate(1, 4);
  l = f.forward_batch({{1, p.data() + 4, n - 4}}, false);
  EXPECT_EQ(max_diff(l, want.data(), V), 0.0);
  EXPECT_EQ(f.position(1), n);
  EXPECT_EQ(f.position(0), 0);
}

TEST(BatchedForward, DecodeStepHasTheSingleSequenceSyncPoints) {
  const ModelUnderTest s = make_setup("ffba");
  ThreadPool pool(2);
  Forward single(*s.model, pool, 32, s.exec(), s.layers());
  single.forward(kPrompts[0].data(), 5, false);
  const int32_t tok = 9;
  single.forward(&tok, 1, false);
  Forward batched(*s.model, pool, 32, s.exec(), s.layers(), 4);
  std::vector<Forward::Chunk> chunks;
  for (int i = 0; i < 4; ++i) chunks.push_back({i, kPrompts[i].data(), static_cast<int64_t>(kPrompts[i].size())});
  batched.forward_batch(chunks, false);
  for (auto& c : chunks) c = {c.slot, &tok, 1};
  batched.forward_batch(chunks, false);
  EXPECT_EQ(batched.last_sync_points(), single.last_sync_points());
}

TEST(BatchedForward, ClearErrors) {
  const ModelUnderTest s = make_setup("base");
  ThreadPool pool(1);
  Forward f(*s.model, pool, 8, nullptr, nullptr, 2);
  const int32_t t[3] = {1, 2, 3};
  EXPECT_NE(error_of([&] {
              f.forward_batch({{0, t, 1}, {0, t, 1}}, false);
            }).find("slot 0 appears twice"),
            std::string::npos);
  EXPECT_NE(error_of([&] { f.forward_batch({{2, t, 1}}, false); }).find("slot 2: expected 0..1"), std::string::npos);
  EXPECT_NE(error_of([&] { f.forward_batch({}, false); }).find("no chunks"), std::string::npos);
  f.forward_batch({{1, t, 3}, {0, t, 1}}, false);
  f.forward_batch({{1, t, 3}}, false);
  // A refused call changes nothing: slot 0 is untouched by the failing chunk of slot 1.
  EXPECT_NE(error_of([&] {
              f.forward_batch({{0, t, 1}, {1, t, 3}}, false);
            }).find("slot 1: context is full: 6 cached + 3 new tokens exceed the context of 8"),
            std::string::npos);
  EXPECT_EQ(f.position(0), 1);
  EXPECT_EQ(f.position(1), 6);
  EXPECT_NE(error_of([&] { f.truncate(1, 7); }).find("cannot truncate to 7 positions, it holds 6"), std::string::npos);
  EXPECT_THROW(Forward(*s.model, pool, 8, nullptr, nullptr, 0), Error);
}

}  // namespace
}  // namespace flora
