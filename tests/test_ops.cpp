// Every SIMD kernel against its scalar reference (ops/reference.h, run in
// double), on every SIMD target compiled in and supported by this CPU, at sizes
// that are not multiples of any vector width.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "ops/ops.h"
#include "ops/reference.h"
#include "util/dtype.h"
#include "util/error.h"

namespace flora {
namespace {

constexpr double kEpsF32 = 5.96e-8;  // 2^-24, unit round-off of f32

std::vector<float> random_vector(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

// Stores the f32 values in `dtype` and returns the bytes.
std::vector<uint16_t> to_half(const std::vector<float>& v, DType dtype) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = dtype == DType::BF16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
  return h;
}

class EveryTarget : public ::testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override { ops::set_simd_target_for_test(GetParam()); }
  void TearDown() override { ops::set_simd_target_for_test(0); }
};

// Error bound of an f32 dot product of length K summed in any order:
// |computed - exact| <= (K + 2) * eps * sum_k |x_k w_k| (Higham, recursive
// summation), so a correct kernel can never exceed it, while a wrong index or a
// dropped tail misses by O(|x w|), far above it.
TEST_P(EveryTarget, MatmulRowsMatchesReference) {
  std::mt19937 rng(7);
  for (DType dtype : {DType::F32, DType::BF16, DType::F16}) {
    for (int64_t K : {1, 7, 16, 33, 100, 257}) {
      for (int64_t T : {1, 3, 5, 9, 70}) {
        const int64_t N = 11, ldx = K + 3, ldy = N + 2, ldw = K + (K % 2);
        auto x = random_vector(T * ldx, rng);
        auto wf = random_vector(N * ldw, rng, 0.5f);
        auto wh = to_half(wf, dtype);
        MatrixRef w{dtype == DType::F32 ? static_cast<const void*>(wf.data()) : wh.data(), dtype, N, K, ldw};
        for (bool accumulate : {false, true}) {
          std::vector<float> y(T * ldy, 0.25f), yref(T * ldy, 0.25f);
          const int64_t row0 = 2, row1 = N;  // a slice, as a thread would get
          ops::matmul_rows(y.data(), ldy, x.data(), ldx, T, w, row0, row1, accumulate);
          ref::matmul_rows<double>(yref.data(), ldy, x.data(), ldx, T, w, row0, row1, accumulate);
          for (int64_t t = 0; t < T; ++t)
            for (int64_t r = 0; r < ldy; ++r) {
              const int64_t i = t * ldy + r;
              if (r < row0 || r >= row1) {
                ASSERT_EQ(y[i], 0.25f) << "wrote outside its rows";
                continue;
              }
              double mag = accumulate ? 0.25 : 0.0;
              for (int64_t k = 0; k < K; ++k) mag += std::fabs(x[t * ldx + k] * ref::weight_at(w, r, k));
              ASSERT_NEAR(y[i], yref[i], (K + 3) * kEpsF32 * mag)
                  << dtype_name(dtype) << " K=" << K << " T=" << T << " t=" << t << " r=" << r;
            }
        }
      }
    }
  }
}

TEST_P(EveryTarget, DotAxpyRmsnormMatchReference) {
  std::mt19937 rng(3);
  for (int64_t n : {1, 5, 15, 17, 31, 64, 100, 1000}) {
    auto a = random_vector(n, rng), b = random_vector(n, rng);
    double mag = 0;
    for (int64_t i = 0; i < n; ++i) mag += std::fabs(a[i] * b[i]);
    EXPECT_NEAR(ops::dot(a.data(), b.data(), n), ref::dot<double>(a.data(), b.data(), n),
                (n + 2) * kEpsF32 * mag) << n;
    std::vector<float> ones(n, 1.0f);
    double abs_sum = 0;
    for (float v : a) abs_sum += std::fabs(v);
    EXPECT_NEAR(ops::sum(a.data(), n), ref::dot<double>(a.data(), ones.data(), n), (n + 2) * kEpsF32 * abs_sum) << n;

    auto y = b;
    ops::axpy(0.75f, a.data(), y.data(), n);
    for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(y[i], b[i] + 0.75 * a[i], 2 * kEpsF32 * (std::fabs(b[i]) + std::fabs(a[i]))) << i;

    auto w = random_vector(n, rng);
    std::vector<float> out(n), outref(n);
    ops::rmsnorm(out.data(), a.data(), w.data(), n, 1e-5f);
    ref::rmsnorm<double>(outref.data(), a.data(), w.data(), n, 1e-5f);
    // Relative error of the inverse norm is O((n + 4) eps); each output adds 2 eps.
    for (int64_t i = 0; i < n; ++i)
      EXPECT_NEAR(out[i], outref[i], (n + 8) * kEpsF32 * std::fabs(outref[i]) + 1e-30) << n << " " << i;
  }
}

// A dtype without a kernel is an error, never read as f32 (the old default).
TEST(Ops, UnknownWeightDtypeIsAnError) {
  const std::vector<int8_t> w(16, 1);
  std::vector<float> x(4, 1.0f), y(4, 0.0f);
  const MatrixRef m{w.data(), DType::I8, 4, 4, 0};
  try {
    ops::matmul_rows(y.data(), 4, x.data(), 4, 1, m, 0, 4, false);
    FAIL() << "no error for I8 weights";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("I8"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ref::weight_at(m, 0, 0), Error);
}

TEST(Ops, RmsnormInPlace) {
  std::vector<float> x = {1, 2, 3, 4, 5}, w(5, 1.0f), expect(5);
  ref::rmsnorm<double>(expect.data(), x.data(), w.data(), 5, 0.0f);
  ops::rmsnorm(x.data(), x.data(), w.data(), 5, 0.0f);
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(x[i], expect[i], 1e-6);
}

std::string target_name(const ::testing::TestParamInfo<int64_t>& info) {
  return ops::simd_target_name(info.param);
}

INSTANTIATE_TEST_SUITE_P(Simd, EveryTarget, ::testing::ValuesIn(ops::simd_targets_available()), target_name);

}  // namespace
}  // namespace flora
