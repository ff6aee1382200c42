// The serving bench (`flora bench --serve`) end to end on the tiny model:
// structure only (every configuration at every stream count, steps with all
// streams decoding found, FLoRA's synchronisation points), never timing.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench.h"
#include "bench/bench_serve.h"
#include "model/weights.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace flora {
namespace {

const std::string kModel = std::string(FLORA_SOURCE_DIR) + "/tests/fixtures/tiny_llama/f32";
const std::string kTokenizer = std::string(FLORA_SOURCE_DIR) + "/tests/fixtures/tokenizer/tiny_tokenizer.json";

TEST(ServeBench, RunsEveryConfigurationWithAllStreamsDecodingInLockstep) {
  auto model = LlamaModel::load(kModel);
  const Tokenizer tok = Tokenizer::from_file(kTokenizer);
  ThreadPool pool(2);
  std::vector<std::unique_ptr<AttachedAdapter>> owned;
  std::vector<ServeConfig> configs = {{"base", {}}};
  for (const std::string v : {"ffba", "lora"}) {
    std::vector<BenchVariant> mixed;
    for (uint64_t seed = 1; seed <= 4; ++seed) {
      owned.push_back(make_random_adapter(*model, v, 2, 0, DType::F32, seed));
      mixed.push_back(bench_variant(*owned.back(), DType::F32));
    }
    configs.push_back({v + " x1", {mixed[0]}});
    configs.push_back({v + " x4", mixed});
  }
  BenchOptions o;
  o.n_prompt = 3;
  o.n_gen = 5;
  o.repetitions = 2;
  o.bandwidth_bytes = size_t{1} << 20;
  const std::vector<int> streams = {1, 4, 6};
  const auto results = run_serve_bench(*model, pool, tok, configs, streams, o, [](const std::string&) {});

  ASSERT_EQ(results.size(), streams.size() * configs.size());
  std::map<std::pair<int, std::string>, ServeResult> by;
  for (const auto& r : results) by[{r.streams, r.config}] = r;
  auto at = [&](int n, const std::string& config) -> const ServeResult& { return by.at({n, config}); };
  const double base_bytes = static_cast<double>(model->decode_weight_bytes());
  for (int n : streams) {
    for (const auto& c : configs) {
      ASSERT_EQ(by.count({n, c.name}), 1u) << n << " streams, " << c.name;
      const ServeResult& r = at(n, c.name);
      // The first token of each stream comes from the prefill step, the other n_gen - 1 from decode steps.
      EXPECT_EQ(r.decode_steps, o.n_gen - 1) << n << " streams, " << c.name;
      EXPECT_EQ(r.tpot_samples_ms.size(), static_cast<size_t>(o.repetitions));
      EXPECT_GT(r.tpot_ms, 0);
      EXPECT_GT(r.bandwidth_gbs, 0);
      const int64_t want_adapters = c.adapters.empty() ? 0 : std::min<int64_t>(n, c.adapters.size());
      EXPECT_EQ(r.adapters, want_adapters) << n << " streams, " << c.name;
      if (c.adapters.empty())
        EXPECT_EQ(r.weight_bytes, base_bytes);
      else
        EXPECT_GT(r.weight_bytes, base_bytes);
    }
    const ServeResult& base = at(n, "base");
    // FLoRA rows add no synchronisation point, however many adapters share the step; unfused LoRA adds some.
    EXPECT_EQ(at(n, "ffba x1").sync_points_per_step, base.sync_points_per_step) << n;
    EXPECT_EQ(at(n, "ffba x4").sync_points_per_step, base.sync_points_per_step) << n;
    EXPECT_GT(at(n, "lora x4").sync_points_per_step, base.sync_points_per_step) << n;
    EXPECT_EQ(base.overhead_pct, 0.0);
  }
  // Four adapters' bytes at four streams and more, one adapter's at one.
  EXPECT_GT(at(4, "ffba x4").weight_bytes, at(4, "ffba x1").weight_bytes);
  EXPECT_EQ(at(1, "ffba x4").weight_bytes, at(1, "ffba x1").weight_bytes);
}

TEST(ServeBench, RefusesAMergedLoraAndAFirstConfigurationThatIsNotTheBase) {
  auto model = LlamaModel::load(kModel);
  const Tokenizer tok = Tokenizer::from_file(kTokenizer);
  ThreadPool pool(1);
  auto ffba = make_random_adapter(*model, "ffba", 2, 0, DType::F32, 1);
  auto merged = make_random_adapter(*model, "lora-merged", 2, 0, DType::F32, 1);
  BenchOptions o;
  o.n_prompt = 2;
  o.n_gen = 2;
  o.repetitions = 1;
  o.bandwidth_bytes = size_t{1} << 20;
  auto quiet = [](const std::string&) {};
  const ServeConfig base{"base", {}};
  EXPECT_THROW(run_serve_bench(*model, pool, tok, {{"ffba", {bench_variant(*ffba, DType::F32)}}}, {1}, o, quiet),
               Error);
  try {
    run_serve_bench(*model, pool, tok, {base, {"merged", {bench_variant(*merged, DType::F32)}}}, {1}, o, quiet);
    FAIL() << "a merged LoRA ran in a serving batch";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("merged LoRA"), std::string::npos) << e.what();
  }
  o.n_gen = 1;  // no decode step to measure
  EXPECT_THROW(run_serve_bench(*model, pool, tok, {base}, {1}, o, quiet), Error);
}

}  // namespace
}  // namespace flora
