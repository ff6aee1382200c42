// The sampler on every kind of float: NaN is an error naming the token, +Inf
// takes all the probability, -Inf none, all -Inf is an error.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>
#include <vector>

#include "model/sampler.h"
#include "scratch_dir.h"

namespace flora {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

SamplerParams greedy() { return SamplerParams{0.0f, 40, 0.95f, 0}; }
SamplerParams sampling(int top_k = 40, float top_p = 0.95f, uint64_t seed = 1) {
  return SamplerParams{0.8f, top_k, top_p, seed};
}

int32_t sample(const SamplerParams& p, const std::vector<float>& logits) {
  Sampler s(p);
  return s.sample(logits.data(), static_cast<int64_t>(logits.size()));
}

TEST(Sampler, GreedyIsTheFirstLargest) {
  EXPECT_EQ(argmax(std::vector<float>{1, 3, 2, 3}.data(), 4), 1);
  EXPECT_EQ(sample(greedy(), {-1, -5, 0.5f, 0.25f}), 2);
  EXPECT_EQ(sample(greedy(), {-kInf, -kInf, -3, -kInf}), 2);
}

TEST(Sampler, NanIsAnErrorNamingTheToken) {
  std::vector<float> logits(100, 0.0f);
  logits[37] = kNaN;
  for (const SamplerParams& p : {greedy(), sampling(), sampling(0, 1.0f)}) {
    const std::string e = error_of([&] { sample(p, logits); });
    EXPECT_NE(e.find("token 37 of 100 is NaN"), std::string::npos) << e;
  }
  // NaN first, last, everywhere, and beside +Inf: still an error, never a pick.
  for (size_t at : {size_t{0}, size_t{99}}) {
    std::vector<float> l(100, 1.0f);
    l[at] = -kNaN;
    EXPECT_THROW(sample(greedy(), l), Error);
    EXPECT_THROW(sample(sampling(), l), Error);
  }
  EXPECT_THROW(sample(sampling(), std::vector<float>(8, kNaN)), Error);
  EXPECT_THROW(sample(greedy(), {kInf, kNaN}), Error);
  EXPECT_THROW(sample(sampling(), {kInf, kNaN}), Error);
}

TEST(Sampler, PositiveInfinityTakesAllTheProbability) {
  std::vector<float> logits(50, 10.0f);
  logits[12] = kInf;
  EXPECT_EQ(sample(greedy(), logits), 12);
  for (uint64_t seed = 0; seed < 20; ++seed) EXPECT_EQ(sample(sampling(40, 0.95f, seed), logits), 12);
  // Several +Inf: greedy takes the first, sampling one of them (each, over seeds).
  logits[30] = kInf;
  EXPECT_EQ(sample(greedy(), logits), 12);
  std::set<int32_t> seen;
  Sampler s(sampling(1, 0.5f, 3));
  for (int i = 0; i < 64; ++i) seen.insert(s.sample(logits.data(), 50));
  EXPECT_EQ(seen, (std::set<int32_t>{12, 30}));
}

TEST(Sampler, NegativeInfinityIsNeverChosen) {
  std::vector<float> logits(64, -kInf);
  logits[5] = -1000.0f, logits[40] = -1001.0f;
  Sampler s(sampling(0, 1.0f, 9));  // no top-k or top-p: every token a candidate
  for (int i = 0; i < 200; ++i) {
    const int32_t id = s.sample(logits.data(), 64);
    EXPECT_TRUE(id == 5 || id == 40) << id;
  }
  // Only one token is not -Inf: it is the only choice.
  std::vector<float> one(64, -kInf);
  one[63] = 0;
  EXPECT_EQ(sample(sampling(0, 1.0f), one), 63);
  EXPECT_EQ(sample(greedy(), one), 63);
}

TEST(Sampler, AllNegativeInfinityIsAnError) {
  const std::vector<float> logits(10, -kInf);
  for (const SamplerParams& p : {greedy(), sampling()}) {
    const std::string e = error_of([&] { sample(p, logits); });
    EXPECT_NE(e.find("all 10 are -Inf"), std::string::npos) << e;
  }
  EXPECT_THROW(argmax(logits.data(), 0), Error);
}

TEST(Sampler, FiniteExtremesStayFinite) {
  // Differences that overflow to -Inf in (x - max) / T are probability 0, not NaN.
  const float big = std::numeric_limits<float>::max();
  EXPECT_EQ(sample(sampling(0, 1.0f), {-big, big, -big}), 1);
  Sampler cold(SamplerParams{1e-30f, 0, 1.0f, 0});
  const std::vector<float> logits = {0.0f, 1.0f, 0.5f};
  EXPECT_EQ(cold.sample(logits.data(), 3), 1);
}

}  // namespace
}  // namespace flora
