// Meta-test of tests/compare.h, the comparison every numeric test uses: NaN
// and Inf where a finite value is expected fail any tolerance, wherever they
// are and whatever the other values do.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "compare.h"

namespace flora::test {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

TEST(Compare, ExactAndSmallErrorsPass) {
  const std::vector<float> want = {1.0f, -2.0f, 3.5f};
  EXPECT_EQ(max_abs_error(want, want), 0.0);
  const std::vector<float> got = {1.0f, -2.0f, 3.5f + 1e-6f};
  EXPECT_GT(max_abs_error(got, want), 0.0);
  EXPECT_LE(max_abs_error(got, want), 1e-5);
  EXPECT_LE(max_error_ratio(got.data(), want.data(), 3, 1e-5, 0.0), 1.0);
}

TEST(Compare, NanOrInfAnywhereFails) {
  const std::vector<double> want = {0.5, -1.0, 2.0, 4.0};
  for (size_t at = 0; at < want.size(); ++at)
    for (float bad : {kNaN, kInf, -kInf}) {
      std::vector<float> got(want.begin(), want.end());
      got[at] = bad;
      EXPECT_FALSE(max_abs_error(got, want) <= 1e30) << "bad value at " << at;
      EXPECT_FALSE(max_error_ratio(got.data(), want.data(), got.size(), 1e30, 1e30) <= 1.0) << at;
      EXPECT_FALSE(element_error(bad, 1.0) <= 1e30);
    }
}

// The case the old `std::max(worst, fabs(got - want))` let through.
TEST(Compare, AllNanFails) {
  const std::vector<float> got(64, kNaN), want(64, 0.25f);
  EXPECT_EQ(max_abs_error(got, want), std::numeric_limits<double>::infinity());
  EXPECT_EQ(max_error_ratio(got.data(), want.data(), got.size(), 1e-4, 1e-4), std::numeric_limits<double>::infinity());
}

TEST(Compare, NonFiniteReferenceOnlyMatchesItself) {
  const std::vector<float> want = {-kInf, 1.0f};
  EXPECT_EQ(max_abs_error(std::vector<float>{-kInf, 1.0f}, want), 0.0);  // a masked logit, right
  EXPECT_FALSE(max_abs_error(std::vector<float>{kInf, 1.0f}, want) <= 1e30);
  EXPECT_FALSE(max_abs_error(std::vector<float>{0.0f, 1.0f}, want) <= 1e30);
  EXPECT_FALSE(max_abs_error(std::vector<float>{kNaN}, std::vector<float>{kNaN}) <= 1e30) << "NaN never matches";
  EXPECT_EQ(max_magnitude(want.data(), want.size()), std::numeric_limits<double>::infinity());
  const std::vector<double> nan_ref = {1.0, std::nan("")};
  EXPECT_EQ(max_magnitude(nan_ref.data(), nan_ref.size()), std::numeric_limits<double>::infinity());
}

TEST(Compare, SizeMismatchFails) {
  EXPECT_FALSE(max_abs_error(std::vector<float>(3), std::vector<float>(4)) <= 1e30);
}

}  // namespace
}  // namespace flora::test
