// Every SIMD kernel against its scalar reference (ops/reference.h, run in
// double), on every SIMD target compiled in and supported by this CPU, at sizes
// that are not multiples of any vector width; the matrix products also for
// every weight format (ops/formats.h) and for the split invariance they promise.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iterator>
#include <random>
#include <tuple>
#include <vector>

#include "compare.h"
#include "ops/formats.h"
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

// ---- the matrix products: one harness over kernel x format x target, shapes inside

enum class Kernel { Rows, Cols };

// A product of the harness: matmul_rows reduces over w's columns and writes a
// slice of its rows, matmul_cols reduces over w's rows and writes a slice of
// its columns. `out` is the output width, `K` the reduction length.
struct Product {
  Kernel kernel;
  int64_t out(const MatrixRef& w) const { return kernel == Kernel::Rows ? w.rows : w.cols; }
  int64_t K(const MatrixRef& w) const { return kernel == Kernel::Rows ? w.cols : w.rows; }
  // w's element of output o and reduction index k, from `widened` (rows, cols).
  double weight(const std::vector<double>& widened, const MatrixRef& w, int64_t o, int64_t k) const {
    return kernel == Kernel::Rows ? widened[o * w.cols + k] : widened[k * w.cols + o];
  }
  void simd(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t T, const MatrixRef& w, int64_t o0, int64_t o1,
            bool accumulate) const {
    (kernel == Kernel::Rows ? ops::matmul_rows : ops::matmul_cols)(y, ldy, x, ldx, T, w, o0, o1, accumulate);
  }
  void reference(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t T, const MatrixRef& w, int64_t o0,
                 int64_t o1, bool accumulate) const {
    (kernel == Kernel::Rows ? ref::matmul_rows<double> : ref::matmul_cols<double>)(y, ldy, x, ldx, T, w, o0, o1,
                                                                                    accumulate);
  }
};

// A weight matrix (rows, cols) with row stride ld, random, stored in `dtype`;
// widened: (rows, cols) its values as ref::weight_at reads them.
struct TestMatrix {
  std::vector<float> f32;
  std::vector<uint16_t> half;
  MatrixRef ref;
  std::vector<double> widened;
  TestMatrix(DType dtype, int64_t rows, int64_t cols, int64_t ld, std::mt19937& rng)
      : f32(random_vector(rows * ld, rng, 0.5f)), half(to_half(f32, dtype)) {
    ref = MatrixRef{dtype == DType::F32 ? static_cast<const void*>(f32.data()) : half.data(), dtype, rows, cols, ld};
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) widened.push_back(ref::weight_at(ref, r, c));
  }
};

class Products : public ::testing::TestWithParam<std::tuple<int64_t, Kernel, DType>> {
 protected:
  void SetUp() override { ops::set_simd_target_for_test(std::get<0>(GetParam())); }
  void TearDown() override { ops::set_simd_target_for_test(0); }
  const Product p{std::get<1>(GetParam())};
  const DType dtype = std::get<2>(GetParam());
};

// Shapes with tails of every vector width (up to 16 f32 lanes), the 4 x 4
// register blocks, the 64-token tiles of both kernels and the 256-row passes
// of matmul_cols (rows 300); strides beyond the row everywhere.
constexpr int64_t kRows[] = {1, 3, 11, 17, 64, 300};
constexpr int64_t kCols[] = {1, 7, 16, 33, 100, 257};
constexpr int64_t kTokens[] = {1, 2, 3, 5, 17, 70};

// Against the reference in double. The error bound of an f32 sum of K
// products (and the start value when accumulating) in any order:
// |computed - exact| <= (K + 2) * eps * sum |terms| (Higham, recursive
// summation), so a correct kernel can never exceed it, while a wrong index or a
// dropped tail misses by O(|x w|), far above it. A NaN fails (element_error).
TEST_P(Products, MatchReference) {
  std::mt19937 rng(7);
  for (int64_t rows : kRows)
    for (int64_t cols : kCols) {
      TestMatrix m(dtype, rows, cols, cols + 3, rng);
      const MatrixRef& w = m.ref;
      const int64_t out = p.out(w), K = p.K(w), ldx = K + 3, ldy = out + 2;
      const int64_t o0 = out > 2 ? 2 : 0;  // a slice, as a thread would get
      for (int64_t T : kTokens) {
        const auto x = random_vector(T * ldx, rng);
        for (bool accumulate : {false, true}) {
          std::vector<float> y(T * ldy, 0.25f), yref(T * ldy, 0.25f);
          p.simd(y.data(), ldy, x.data(), ldx, T, w, o0, out, accumulate);
          p.reference(yref.data(), ldy, x.data(), ldx, T, w, o0, out, accumulate);
          for (int64_t t = 0; t < T; ++t)
            for (int64_t o = 0; o < ldy; ++o) {
              const int64_t i = t * ldy + o;
              if (o < o0 || o >= out) {
                ASSERT_EQ(y[i], 0.25f) << "wrote outside its slice";
                continue;
              }
              double mag = accumulate ? 0.25 : 0.0;
              for (int64_t k = 0; k < K; ++k) mag += std::fabs(x[t * ldx + k] * p.weight(m.widened, w, o, k));
              ASSERT_LE(test::element_error(y[i], yref[i]), (K + 3) * kEpsF32 * mag)
                  << dtype_name(dtype) << " rows=" << rows << " cols=" << cols << " T=" << T << " t=" << t
                  << " out=" << o << " accumulate=" << accumulate << ": " << y[i] << " vs " << yref[i];
            }
        }
      }
    }
}

// The same bits however the outputs are split between calls (threads) and the
// tokens grouped into calls (batching, padding): ops.h promises this of
// matmul_cols (one chain per element), and rows are independent in
// matmul_rows (docs/architecture.md).
TEST_P(Products, SplitsGiveTheSameBits) {
  std::mt19937 rng(11);
  for (int64_t rows : kRows)
    for (int64_t cols : kCols) {
      TestMatrix m(dtype, rows, cols, cols + 5, rng);
      const MatrixRef& w = m.ref;
      const int64_t out = p.out(w), K = p.K(w), ldx = K + 1, ldy = out + 3;
      for (int64_t T : kTokens) {
        const auto x = random_vector(T * ldx, rng);
        for (bool accumulate : {false, true}) {
          const auto y0 = random_vector(T * ldy, rng);
          std::vector<float> whole = y0, split = y0;
          p.simd(whole.data(), ldy, x.data(), ldx, T, w, 0, out, accumulate);
          // Outputs cut at 1, at an odd point and at a vector-width multiple;
          // tokens cut into 1, then halves of the rest.
          const int64_t cuts[] = {0, std::min<int64_t>(1, out), std::max<int64_t>(1, out / 3),
                                  std::max<int64_t>(out / 3, std::min<int64_t>(out, 32)), out};
          const int64_t tcuts[] = {0, 1, 1 + (T - 1) / 2, T};
          for (size_t i = 0; i + 1 < std::size(tcuts); ++i)
            for (size_t j = 0; j + 1 < std::size(cuts); ++j) {
              const int64_t t0 = tcuts[i], t1 = tcuts[i + 1], o0 = cuts[j], o1 = cuts[j + 1];
              if (t1 > t0 && o1 > o0)
                p.simd(split.data() + t0 * ldy, ldy, x.data() + t0 * ldx, ldx, t1 - t0, w, o0, o1, accumulate);
            }
          ASSERT_EQ(std::memcmp(whole.data(), split.data(), whole.size() * sizeof(float)), 0)
              << dtype_name(dtype) << " rows=" << rows << " cols=" << cols << " T=" << T
              << " accumulate=" << accumulate;
        }
      }
    }
}

std::string product_name(const ::testing::TestParamInfo<Products::ParamType>& info) {
  return ops::simd_target_name(std::get<0>(info.param)) +
         (std::get<1>(info.param) == Kernel::Rows ? "_rows_" : "_cols_") +
         std::string(dtype_name(std::get<2>(info.param)));
}

INSTANTIATE_TEST_SUITE_P(Simd, Products,
                         ::testing::Combine(::testing::ValuesIn(ops::simd_targets_available()),
                                            ::testing::Values(Kernel::Rows, Kernel::Cols),
                                            ::testing::Values(DType::BF16, DType::F16, DType::F32)),
                         product_name);

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

// One row per format with a kernel, consistent with the dtype it names.
TEST(Formats, TableRowsAreTheirDtypes) {
  for (const WeightFormat& f : kWeightFormats) {
    EXPECT_EQ(f.name, dtype_name(f.dtype));
    EXPECT_EQ(find_weight_format(f.dtype), &f);
    EXPECT_EQ(f.block_elems, 1) << f.name << ": a block format needs its own check here";
    EXPECT_EQ(f.block_bytes, static_cast<int64_t>(dtype_size(f.dtype))) << f.name;
  }
  EXPECT_EQ(weight_format_names(), "BF16, F16 or F32");
  const uint16_t data[21] = {};
  EXPECT_EQ((MatrixRef{data, DType::BF16, 3, 5, 7}.row_bytes()), 14);
  EXPECT_EQ((MatrixRef{data, DType::F32, 3, 5, 0}.row_bytes()), 20);
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

// The same for the transposed product and for the row geometry, with the
// formats there are in the message.
TEST(Formats, UnknownWeightDtypeIsAnErrorInEveryKernel) {
  const std::vector<int8_t> w(16, 1);
  std::vector<float> x(4, 1.0f), y(4, 0.0f);
  const MatrixRef m{w.data(), DType::I8, 4, 4, 0};
  for (int kernel = 0; kernel < 3; ++kernel) {
    try {
      if (kernel == 0) ops::matmul_rows(y.data(), 4, x.data(), 4, 1, m, 0, 4, false);
      if (kernel == 1) ops::matmul_cols(y.data(), 4, x.data(), 4, 1, m, 0, 4, false);
      if (kernel == 2) (void)m.row_bytes();
      FAIL() << "no error for I8 weights, kernel " << kernel;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("dtype I8 have no kernel (expected BF16, F16 or F32)"), std::string::npos)
          << e.what();
    }
  }
  EXPECT_EQ(y, std::vector<float>(4, 0.0f));
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
