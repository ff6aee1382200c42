// Every op of ops/ops.h and ops/backward.h through the one harness of
// tests/op_harness.h: one OpCase class per op states its shapes (sizes that
// are not multiples of any vector width, strides beyond the row), how its
// inputs are drawn (scales 0.1, 1 and 10 where the op's rounding depends on
// them), its forward in double, its tolerances and its backward; the table at
// the end names each op with the weight formats it reads and whether it runs
// through the SIMD kernels (matmul_rows, matmul_cols, dot, axpy, rmsnorm):
// those are checked on every target compiled in and supported by this CPU,
// the purely scalar ops on the dispatcher's target, since no dispatch reaches
// their code. After it, the properties of single ops that are not a loop over
// shapes (split invariance, unknown formats, saturation, exact values, the
// bit-for-bit blocks of attention) and the meta-test of the gradient check.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "bf16_products.h"
#include "compare.h"
#include "op_harness.h"
#include "ops/activations.h"
#include "ops/backward.h"
#include "ops/formats.h"
#include "ops/ops.h"
#include "ops/quant.h"
#include "ops/reference.h"
#include "ops/rows.h"
#include "reference_math.h"
#include "util/dtype.h"
#include "util/error.h"
#include "util/threads.h"

namespace flora {
namespace {

using test::kEpsF32;
using test::kNaN;
using test::Mode;
using test::OpCase;
using test::phi_ref;
using test::random_floats;
using test::silu_ref;
using test::Tensor;
using test::to_double;
using test::Vec;

[[maybe_unused]] ::testing::Environment* const kReport = ::testing::AddGlobalTestEnvironment(new test::ReportWorst);

using Cases = std::vector<std::unique_ptr<OpCase>>;

// Stores the f32 values in `dtype` and returns the bytes.
std::vector<uint16_t> to_half(const std::vector<float>& v, DType dtype) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = dtype == DType::BF16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
  return h;
}

std::string shape_name(std::initializer_list<std::pair<const char*, double>> fields) {
  std::string s;
  for (const auto& [name, value] : fields) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s%s=%g", s.empty() ? "" : " ", name, value);
    s += buf;
  }
  return s;
}

// ================================================================ the matrix products

enum class Kernel { Rows, Cols };

// A product of the harness: matmul_rows reduces over w's columns and writes a
// slice of its rows, matmul_cols reduces over w's rows and writes a slice of
// its columns. `out` is the output width, `K` the reduction length.

struct Product {
  Kernel kernel;
  // BF16 products asked for: BF16 weights then take the dot products where
  // the CPU and the target have them (ops.h), else the f32 kernel.
  bool bf16_dot = false;
  bool rounds_to_bf16(const MatrixRef& w) const {
    return bf16_dot && w.dtype == DType::BF16 && ops::bf16_dot_available();
  }
  int64_t out(const MatrixRef& w) const { return kernel == Kernel::Rows ? w.rows : w.cols; }
  int64_t K(const MatrixRef& w) const { return kernel == Kernel::Rows ? w.cols : w.rows; }
  // w's element of output o and reduction index k, from `widened` (rows, cols).
  double weight(const std::vector<double>& widened, const MatrixRef& w, int64_t o, int64_t k) const {
    return kernel == Kernel::Rows ? widened[o * w.cols + k] : widened[k * w.cols + o];
  }
  void simd(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t T, const MatrixRef& w, int64_t o0, int64_t o1,
            bool accumulate) const {
    std::optional<test::Bf16Products> on;
    if (bf16_dot) on.emplace();
    if (kernel == Kernel::Rows)
      ops::matmul_rows(y, ldy, x, ldx, T, w, o0, o1, accumulate);
    else
      ops::matmul_cols(y, ldy, x, ldx, T, w, o0, o1, accumulate);
  }
  // The input as the product reads it: matmul_rows of a block format rounds
  // each token's row to 8-bit groups (ops.h), so its reference takes the
  // rounded values d q; BF16 products round it to bf16; every other product
  // reads x as it is.
  std::vector<double> as_read(const std::vector<double>& x, const MatrixRef& w, int64_t T) const {
    if (rounds_to_bf16(w)) {
      std::vector<double> rounded(x.size());
      for (size_t i = 0; i < x.size(); ++i) rounded[i] = bf16_to_f32(f32_to_bf16(float(x[i])));
      return rounded;
    }
    if (kernel != Kernel::Rows || !is_quantized(w.dtype)) return x;
    const std::vector<float> xf(x.begin(), x.end());
    ops::ActivationBlocks a;
    ops::round_activations(xf.data(), w.cols, T, w.cols, ops::activation_group(w.dtype), a);
    std::vector<double> rounded(x.size());
    for (size_t i = 0; i < x.size(); ++i)
      rounded[i] = double(a.d[i / a.group]) * a.q[i];  // rows are K = a.K wide, whole groups
    return rounded;
  }
  void reference(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t T, const MatrixRef& w, int64_t o0,
                 int64_t o1, bool accumulate) const {
    (kernel == Kernel::Rows ? ref::matmul_rows<double> : ref::matmul_cols<double>)(y, ldy, x, ldx, T, w, o0, o1,
                                                                                   accumulate);
  }
};

// A weight matrix (rows, cols) with row stride ld, random, stored in `dtype`;
// widened: (rows, cols) its values as ref::weight_at reads them, and as an F32
// matrix (exact: every format's values are f32 values), for the reference
// products to read without widening each weight again for every token. A
// block format's rows are quantize_row's blocks with one block of 0xff bytes
// after each (ld = cols + one block, ld given is ignored): a NaN scale, so a
// kernel reading past a row poisons its output.
struct TestMatrix {
  std::vector<float> f32;
  std::vector<uint16_t> half;
  std::vector<uint8_t> blocks;
  MatrixRef ref;
  std::vector<double> widened;
  std::vector<float> widened_f32;
  MatrixRef widened_ref;
  TestMatrix(DType dtype, int64_t rows, int64_t cols, int64_t ld, std::mt19937& rng) {
    if (is_quantized(dtype)) {
      ld = cols + weight_format(dtype, "test").block_elems;
      f32 = random_floats(rows * cols, rng, 0.5);
      const size_t row_bytes = quantized_bytes(dtype, ld);
      blocks.assign(rows * row_bytes, 0xff);
      for (int64_t r = 0; r < rows; ++r)
        quantize_row(dtype, f32.data() + r * cols, cols, blocks.data() + r * row_bytes);
      ref = MatrixRef{blocks.data(), dtype, rows, cols, ld};
      widened_f32.resize(rows * cols);
      for (int64_t r = 0; r < rows; ++r)
        dequantize_row(dtype, blocks.data() + r * row_bytes, cols, widened_f32.data() + r * cols);
      widened.assign(widened_f32.begin(), widened_f32.end());
      // ref::weight_at reads the same values (a sample: it widens a block per call).
      for (int64_t i = 0; i < rows * cols; i += 7)
        EXPECT_EQ(ref::weight_at(ref, i / cols, i % cols), widened[i]) << dtype_name(dtype) << " element " << i;
    } else {
      f32 = random_floats(rows * ld, rng, 0.5);
      half = to_half(f32, dtype);
      ref = MatrixRef{dtype == DType::F32 ? static_cast<const void*>(f32.data()) : half.data(), dtype, rows, cols, ld};
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) widened.push_back(ref::weight_at(ref, r, c));
      widened_f32.assign(widened.begin(), widened.end());
    }
    widened_ref = MatrixRef{widened_f32.data(), DType::F32, rows, cols, 0};
  }
  TestMatrix(const TestMatrix&) = delete;  // ref points into the vectors
};

// Shapes with tails of every vector width (up to 16 f32 lanes), the 4 x 4
// register blocks, the 64-token tiles of both kernels and the 256-row passes
// of matmul_cols (rows 300); strides beyond the row everywhere.
constexpr int64_t kRows[] = {1, 3, 11, 17, 64, 300};
constexpr int64_t kCols[] = {1, 7, 16, 33, 100, 257};
constexpr int64_t kTokens[] = {1, 2, 3, 5, 17, 70};

// The block formats' shapes: rows that are no multiple of the 4-row block nor
// of a vector, and the 256-row passes of matmul_cols (300); columns of one,
// two and three blocks (Q8_0 and Q4_0 also 33 blocks: a T > 1 product then
// widens tiles of 60 rows, several per matrix; the K-quants' 768 columns give
// tiles of 84); decode, small batches and the 64-token tiles.
struct Shapes {
  std::vector<int64_t> rows, cols, tokens;
};
Shapes shapes_of(DType dtype) {
  const int64_t B = weight_format(dtype, "test").block_elems;
  if (B == 1)
    return {{std::begin(kRows), std::end(kRows)},
            {std::begin(kCols), std::end(kCols)},
            {std::begin(kTokens), std::end(kTokens)}};
  Shapes s{{1, 3, 17, 300}, {B, 2 * B, 3 * B}, {1, 3, 17, 70}};
  if (B == 32) s.cols.push_back(33 * B);
  return s;
}

// y (T, out) at columns [o0, out), a slice as a thread would get, of x (T, K) and w.
class MatmulCase : public OpCase {
 public:
  MatmulCase(Product p, const std::shared_ptr<TestMatrix>& m, int64_t T, bool accumulate, std::mt19937& rng)
      : p_(p), m_(m), T_(T), accumulate_(accumulate) {
    const MatrixRef& w = m->ref;
    out_ = p.out(w), K_ = p.K(w), ldx_ = K_ + 3, ldy_ = out_ + 2, o0_ = out_ > 2 ? 2 : 0;
    where =
        std::string(dtype_name(w.dtype)) + " " +
        shape_name(
            {{"rows", double(w.rows)}, {"cols", double(w.cols)}, {"T", double(T)}, {"accumulate", double(accumulate)}});
    input(test::matrix("x", T, K_, ldx_), random_floats(T * K_, rng, 1.0));
    Tensor y = test::matrix("y", T, out_ - o0_, ldy_, o0_);
    y.mode = accumulate ? Mode::Accumulate : Mode::Overwrite;
    out.push_back(y);
  }
  void forward() override {
    p_.simd(out[0].data() - o0_, ldy_, in[0].data(), ldx_, T_, m_->ref, o0_, out_, accumulate_);
  }
  std::vector<Vec> reference(const std::vector<Vec>& x) const override {
    std::vector<float> xb(T_ * ldx_), yb(T_ * ldy_);
    const Vec read = p_.as_read(x[0], m_->ref, T_);
    for (int64_t t = 0; t < T_; ++t) {
      for (int64_t k = 0; k < K_; ++k) xb[t * ldx_ + k] = float(read[t * K_ + k]);
      for (int64_t o = o0_; o < out_; ++o) yb[t * ldy_ + o] = float(prefill[0][t * (out_ - o0_) + o - o0_]);
    }
    p_.reference(yb.data(), ldy_, xb.data(), ldx_, T_, m_->widened_ref, o0_, out_, accumulate_);
    Vec y;
    for (int64_t t = 0; t < T_; ++t)
      for (int64_t o = o0_; o < out_; ++o) y.push_back(yb[t * ldy_ + o]);
    return {y};
  }
  // The error bound of an f32 sum of K products (and the start value when
  // accumulating) in any order: |computed - exact| <= (K + 2) eps sum|terms|
  // (Higham, recursive summation), so a correct kernel can never exceed it,
  // while a wrong index or a dropped tail misses by O(|x w|), far above it.
  // The same bound for every format, the block formats included, whose
  // reference weights are dequantize_row's values (so the weights'
  // quantization error is not in the comparison): matmul_cols reads exactly
  // those (BlockProducts checks it is the F32 kernel on them bit for bit);
  // matmul_rows sums the integer levels exactly and scales them in f32, and
  // its reference reads the rounded activations (as_read), so neither the
  // activations' rounding is in the comparison (RoundActivations bounds it).
  // BF16 products alike: the reference reads the bf16 values, whose products
  // with bf16 weights are exact in f32, so only the f32 sums remain.
  Vec tolerance(size_t, const Vec&) const override {
    const Vec x = p_.as_read(in[0].values(), m_->ref, T_);
    Vec tol;
    for (int64_t t = 0; t < T_; ++t)
      for (int64_t o = o0_; o < out_; ++o) {
        double mag = accumulate_ ? std::fabs(prefill[0][t * (out_ - o0_) + o - o0_]) : 0.0;
        for (int64_t k = 0; k < K_; ++k) mag += std::fabs(x[t * K_ + k] * p_.weight(m_->widened, m_->ref, o, k));
        tol.push_back((K_ + 3) * kEpsF32 * mag);
      }
    return tol;
  }

 private:
  Product p_;
  std::shared_ptr<TestMatrix> m_;
  int64_t T_, out_, K_, ldx_, ldy_, o0_;
  bool accumulate_;
};

Cases matmul_cases(Product product, DType dtype, std::mt19937& rng) {
  Cases cases;
  const Shapes shapes = shapes_of(dtype);
  for (int64_t rows : shapes.rows)
    for (int64_t cols : shapes.cols) {
      auto m = std::make_shared<TestMatrix>(dtype, rows, cols, cols + 3, rng);
      for (int64_t T : shapes.tokens)
        for (bool accumulate : {false, true})
          cases.push_back(std::make_unique<MatmulCase>(product, m, T, accumulate, rng));
    }
  return cases;
}

// ================================================================ dot, sum, axpy

constexpr int64_t kVectorSizes[] = {1, 5, 15, 17, 31, 64, 100, 1000};

// dot(a, b), or sum(a) (b absent).
class ReductionCase : public OpCase {
 public:
  ReductionCase(bool is_dot, int64_t n, std::mt19937& rng) : dot_(is_dot), n_(n) {
    where = shape_name({{"n", double(n)}});
    input(test::matrix("a", 1, n, n), random_floats(n, rng, 1.0));
    if (dot_) input(test::matrix("b", 1, n, n), random_floats(n, rng, 1.0));
    out.push_back(test::scalar(dot_ ? "dot" : "sum"));
  }
  void forward() override {
    out[0].value = dot_ ? ops::dot(in[0].data(), in[1].data(), n_) : ops::sum(in[0].data(), n_);
  }
  std::vector<Vec> reference(const std::vector<Vec>& x) const override {
    const std::vector<float> a = test::to_float(x[0]), b = dot_ ? test::to_float(x[1]) : std::vector<float>(n_, 1.0f);
    return {{ref::dot<double>(a.data(), b.data(), n_)}};
  }
  // An f32 sum of n terms in any order: (n + 2) eps sum|terms| (Higham).
  Vec tolerance(size_t, const Vec&) const override {
    const Vec a = in[0].values(), b = dot_ ? in[1].values() : Vec(n_, 1.0);
    double mag = 0;
    for (int64_t i = 0; i < n_; ++i) mag += std::fabs(a[i] * b[i]);
    return {(n_ + 2) * kEpsF32 * mag};
  }

 private:
  bool dot_;
  int64_t n_;
};

// y += 0.75 x.
class AxpyCase : public OpCase {
 public:
  AxpyCase(int64_t n, std::mt19937& rng) : n_(n) {
    where = shape_name({{"n", double(n)}});
    input(test::matrix("x", 1, n, n), random_floats(n, rng, 1.0));
    Tensor y = test::matrix("y", 1, n, n);
    y.mode = Mode::Accumulate;
    out.push_back(y);
  }
  void forward() override { ops::axpy(0.75f, in[0].data(), out[0].data(), n_); }
  std::vector<Vec> reference(const std::vector<Vec>& x) const override {
    Vec y(n_);
    for (int64_t i = 0; i < n_; ++i) y[i] = prefill[0][i] + 0.75 * x[0][i];
    return {y};
  }
  // One product and one sum, each within eps of its size (a fused
  // multiply-add rounds once).
  Vec tolerance(size_t, const Vec&) const override {
    const Vec x = in[0].values();
    Vec tol(n_);
    for (int64_t i = 0; i < n_; ++i) tol[i] = 2 * kEpsF32 * (std::fabs(prefill[0][i]) + std::fabs(x[i]));
    return tol;
  }

 private:
  int64_t n_;
};

// ================================================================ RMSNorm

constexpr float kNormEps = 1e-5f;

Vec rmsnorm_ref(const Vec& x, const Vec& w) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double r = 1.0 / std::sqrt(ss / double(x.size()) + double(kNormEps));
  Vec out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = x[i] * r * w[i];
  return out;
}

// out = rmsnorm(x) w, rstd returned; dx, dw += (dw may be null).
class RmsNormCase : public OpCase {
 public:
  RmsNormCase(int64_t n, double scale, bool backward, std::mt19937& rng) : n_(n) {
    where = shape_name({{"n", double(n)}, {"scale", scale}});
    check_backward = backward;
    input(test::matrix("x", 1, n, n), random_floats(n, rng, scale)).grad = true;
    input(test::matrix("w", 1, n, n), random_floats(n, rng, 1.0)).grad = true;
    for (Tensor& t : in) t.mode = Mode::Accumulate;
    out.push_back(test::matrix("out", 1, n, n));
    out.push_back(test::scalar("rstd"));
    out.back().in_loss = false;
  }
  void forward() override { out[1].value = ops::rmsnorm(out[0].data(), in[0].data(), in[1].data(), n_, kNormEps); }
  std::vector<Vec> reference(const std::vector<Vec>& x) const override {
    double ss = 0;
    for (double v : x[0]) ss += v * v;
    return {rmsnorm_ref(x[0], x[1]), {1.0 / std::sqrt(ss / double(n_) + kNormEps)}};
  }
  Vec tolerance(size_t o, const Vec& want) const override {
    // out: within (n + 8) eps |out| of the exact value (the sum of squares,
    // then two products). rstd: 1 / sqrt rounds to ~2 eps of itself.
    if (o == 0) return test::tolerances(want, 1e-30, (n_ + 8) * kEpsF32);
    return {2 * kEpsF32 * want[0]};
  }
  void backward() override {
    ops::rmsnorm_backward(grad[0].data(), grad[1].data(), dout_t[0].data(), in[0].data(), in[1].data(),
                          float(out[1].value), n_);
  }
  // dx_j = r w_j dout_j - x_j r^3/n sum(...): two terms of the gradient's
  // size and an n-term sum, so (n + 8) eps relative to the largest element.
  Vec gradient_tolerance(size_t, const Vec& want) const override {
    return test::grad_tolerances(want, (n_ + 8) * kEpsF32, 8 * kEpsF32);
  }
  // A frozen norm (dw null) gets the same dx, bit for bit.
  void also(std::mt19937&) override {
    if (!check_backward) return;
    std::vector<float> dx_frozen = test::to_float(grad_prefill[0]);
    ops::rmsnorm_backward(dx_frozen.data(), nullptr, dout_t[0].data(), in[0].data(), in[1].data(), float(out[1].value),
                          n_);
    EXPECT_EQ(to_double(dx_frozen), grad[0].values()) << "frozen norm";
  }

 private:
  int64_t n_;
};

Cases rmsnorm_cases(std::mt19937& rng) {
  Cases cases;
  for (int64_t n : {1, 5, 7, 15, 16, 17, 31, 33, 64, 100, 1000, 2048})
    for (double scale : {0.1, 1.0, 10.0}) {
      const bool backward = n == 7 || n == 16 || n == 33;  // finite differences cost n^2
      cases.push_back(std::make_unique<RmsNormCase>(n, scale, backward, rng));
    }
  return cases;
}

// ================================================================ RoPE

// Llama's frequencies at a position.
struct Angles {
  std::vector<float> cos, sin;
  Angles(int64_t half, double position) {
    for (int64_t j = 0; j < half; ++j) {
      const double theta = position * std::pow(500000.0, -2.0 * j / (2.0 * half));
      cos.push_back(float(std::cos(theta)));
      sin.push_back(float(std::sin(theta)));
    }
  }
};

// The rotation of one head vector, in place: v[j] = a cos - b sin, v[j + half] = b cos + a sin.
class RopeCase : public OpCase {
 public:
  RopeCase(int64_t hd, double position, double scale, std::mt19937& rng) : hd_(hd), a_(hd / 2, position) {
    where = shape_name({{"hd", double(hd)}, {"position", position}, {"scale", scale}});
    check_backward = true;
    // The gradient is overwritten: the backward runs in place on the output's gradient.
    input(test::matrix("v", 1, hd, hd), random_floats(hd, rng, scale)).grad = true;
    out.push_back(test::matrix("rotated", 1, hd, hd));
  }
  void forward() override {
    std::copy(in[0].data(), in[0].data() + hd_, out[0].data());
    ops::rope_forward(out[0].data(), a_.cos.data(), a_.sin.data(), hd_);
  }
  std::vector<Vec> reference(const std::vector<Vec>& x) const override {
    const Vec& v = x[0];
    const size_t half = v.size() / 2;
    Vec r(v.size());
    for (size_t j = 0; j < half; ++j) {
      r[j] = v[j] * a_.cos[j] - v[j + half] * a_.sin[j];
      r[j + half] = v[j + half] * a_.cos[j] + v[j] * a_.sin[j];
    }
    return {r};
  }
  // Two products and a sum per element: 3 eps of |a| + |b| <= 2 max|v|.
  Vec tolerance(size_t, const Vec& want) const override {
    return Vec(want.size(), 6 * kEpsF32 * test::max_abs(in[0].values()));
  }
  void backward() override {
    std::copy(dout_t[0].data(), dout_t[0].data() + hd_, grad[0].data());
    ops::rope_backward(grad[0].data(), a_.cos.data(), a_.sin.data(), hd_);
  }
  // The same 3 eps (|da| + |db|); a rotation keeps each pair's norm, so
  // |da| + |db| <= 2 sqrt(2) max|g|.
  Vec gradient_tolerance(size_t, const Vec& want) const override { return test::grad_tolerances(want, 9 * kEpsF32, 0); }
  // The rotation is orthogonal (cos^2 + sin^2 = 1 up to 2 eps in f32): backward undoes forward.
  void also(std::mt19937&) override {
    std::vector<float> back(out[0].data(), out[0].data() + hd_);
    ops::rope_backward(back.data(), a_.cos.data(), a_.sin.data(), hd_);
    const Vec v = in[0].values();
    EXPECT_TRUE(test::all_close("rope backward(forward(v))", v, to_double(back), 16 * kEpsF32 * test::max_abs(v), 0));
  }

 private:
  int64_t hd_;
  Angles a_;
};

Cases rope_cases(std::mt19937& rng) {
  Cases cases;
  for (int64_t hd : {2, 4, 6, 8, 64})
    for (double position : {0.0, 1.0, 7.0, 300.0})
      for (double scale : {0.1, 1.0, 10.0}) cases.push_back(std::make_unique<RopeCase>(hd, position, scale, rng));
  return cases;
}

// ================================================================ SwiGLU and phi

// h = silu(g) u; dg, du overwritten.
class SwiGluCase : public OpCase {
 public:
  SwiGluCase(int64_t n, double scale, std::mt19937& rng) : n_(n) {
    where = shape_name({{"n", double(n)}, {"scale", scale}});
    check_backward = true;
    input(test::matrix("g", 1, n, n), random_floats(n, rng, scale)).grad = true;
    input(test::matrix("u", 1, n, n), random_floats(n, rng, 1.0)).grad = true;
    out.push_back(test::matrix("h", 1, n, n));
  }
  void forward() override { ops::swiglu_forward(out[0].data(), in[0].data(), in[1].data(), n_); }
  std::vector<Vec> reference(const std::vector<Vec>& x) const override {
    Vec h(n_);
    for (int64_t i = 0; i < n_; ++i) h[i] = silu_ref(x[0][i]) * x[1][i];
    return {h};
  }
  // An exp, a division and a product, each within an eps or two.
  Vec tolerance(size_t, const Vec& want) const override { return test::tolerances(want, 1e-30, 6 * kEpsF32); }
  void backward() override {
    ops::swiglu_backward(grad[0].data(), grad[1].data(), dout_t[0].data(), in[0].data(), in[1].data(), n_);
  }
  // Elementwise: an exp, a division and a few products, each within a few
  // eps; atol covers silu'(g) near its zero at g ~ -1.28 (cancellation in 1 + g (1 - s)).
  Vec gradient_tolerance(size_t, const Vec& want) const override {
    return test::grad_tolerances(want, 8 * kEpsF32, 16 * kEpsF32);
  }

 private:
  int64_t n_;
};

Cases swiglu_cases(std::mt19937& rng) {
  Cases cases;
  for (int64_t n : {7, 33})
    for (double scale : {0.1, 1.0, 10.0}) cases.push_back(std::make_unique<SwiGluCase>(n, scale, rng));
  return cases;
}

const char* const kNonlinearityNames[] = {"identity", "relu", "gelu", "silu"};

// The adapter's phi elementwise (apply_nonlinearity) and phi' as its
// backward, dz = dout phi'(z); dout is 1, so the gradient is phi' itself.
class PhiCase : public OpCase {
 public:
  PhiCase(Nonlinearity n, const std::vector<float>& z) : n_(n) {
    where = kNonlinearityNames[int(n)];
    check_backward = true;
    const int64_t m = int64_t(z.size());
    input(test::matrix("z", 1, m, m), z).grad = true;
    out.push_back(test::matrix(kNonlinearityNames[int(n)], 1, m, m));
    dout = {Vec(z.size(), 1.0)};
  }
  void forward() override {
    for (size_t i = 0; i < in[0].size(); ++i) out[0].data()[i] = apply_nonlinearity(n_, in[0].data()[i]);
  }
  std::vector<Vec> reference(const std::vector<Vec>& x) const override {
    Vec y;
    for (double z : x[0]) y.push_back(phi_ref(n_, z));
    return {y};
  }
  // GELU: 0.5 z (1 + erf) carries |z| eps of absolute error where 1 + erf cancels, |z| <= 40 here.
  Vec tolerance(size_t, const Vec& want) const override { return test::tolerances(want, 64 * kEpsF32, 8 * kEpsF32); }
  void backward() override {
    for (size_t i = 0; i < in[0].size(); ++i)
      grad[0].data()[i] = dout_t[0].data()[i] * nonlinearity_derivative(n_, in[0].data()[i]);
  }
  // phi' is O(1) (|GELU'| <= 1.13, |SiLU'| <= 1.1): a few float ops of O(1)
  // terms (erf, exp), each within 2 eps, plus z phi(z) with |z| <= 8 in GELU.
  Vec gradient_tolerance(size_t, const Vec& want) const override { return Vec(want.size(), 32 * kEpsF32); }

 private:
  Nonlinearity n_;
};

Cases phi_cases(std::mt19937& rng) {
  std::vector<float> zs;
  for (double z = -8.013; z < 8; z += 0.137) zs.push_back(float(z));  // never within a step of ReLU's kink
  for (double scale : {0.1, 1.0, 10.0})
    for (float z : random_floats(20, rng, scale))
      if (std::fabs(z) > 1e-4) zs.push_back(z);
  Cases cases;
  for (Nonlinearity n : {Nonlinearity::Identity, Nonlinearity::ReLU, Nonlinearity::GELU, Nonlinearity::SiLU})
    cases.push_back(std::make_unique<PhiCase>(n, zs));
  return cases;
}

// ================================================================ attention

// Naive causal attention in double over dense (T, hd) q, k, v.
struct AttentionRef {
  Vec out, P;            // (T, hd), (T, T)
  double max_score = 0;  // largest |q.k| / sqrt(hd) seen: the size of the scores' rounding
};
AttentionRef attention_ref(const Vec& q, const Vec& k, const Vec& v, int64_t T, int64_t hd) {
  AttentionRef r;
  r.out.assign(T * hd, 0.0);
  r.P.assign(T * T, 0.0);
  for (int64_t i = 0; i < T; ++i) {
    Vec s(i + 1);
    double mx = -INFINITY;
    for (int64_t j = 0; j <= i; ++j) {
      double d = 0;
      for (int64_t c = 0; c < hd; ++c) d += q[i * hd + c] * k[j * hd + c];
      s[j] = d / std::sqrt(double(hd));
      mx = std::max(mx, s[j]);
      r.max_score = std::max(r.max_score, std::fabs(s[j]));
    }
    double sum = 0;
    for (int64_t j = 0; j <= i; ++j) sum += (s[j] = std::exp(s[j] - mx));
    for (int64_t j = 0; j <= i; ++j) {
      r.P[i * T + j] = s[j] / sum;
      for (int64_t c = 0; c < hd; ++c) r.out[i * hd + c] += r.P[i * T + j] * v[j * hd + c];
    }
  }
  return r;
}

// The rounding of causal attention in f32 is set by that of the scores: each
// carries ~(hd + 2) eps |s| of absolute error, which exp turns into relative
// error of P, and the sums over T positions add T eps. So outputs and
// gradients are compared within this many units of their magnitudes below.
double attention_tol(int64_t T, int64_t hd, double max_score) { return (hd + T + 8) * kEpsF32 * (1 + max_score); }

// The magnitudes of the gradients' terms (the gradients with every term made
// positive), in double: what their f32 rounding is proportional to. They
// matter where the softmax saturates (scale 10): there the true dq and dk are
// ~1e-8, the difference dP - sum P dP of two O(10) numbers, so the f32 result
// can only be right to ~eps of those numbers, as in any f32 attention backward.
struct AttentionMagnitudes {
  Vec dq, dk, dv;  // (T, hd) each
};
AttentionMagnitudes attention_magnitudes(const Vec& q, const Vec& k, const Vec& v, const Vec& dout, int64_t T,
                                         int64_t hd) {
  const Vec P = attention_ref(q, k, v, T, hd).P;
  const double scale = 1.0 / std::sqrt(double(hd));
  AttentionMagnitudes m{Vec(T * hd, 0.0), Vec(T * hd, 0.0), Vec(T * hd, 0.0)};
  for (int64_t i = 0; i < T; ++i) {
    Vec dP(i + 1, 0.0);  // |dout_i| . |v_j|
    double D = 0;
    for (int64_t j = 0; j <= i; ++j) {
      for (int64_t c = 0; c < hd; ++c) dP[j] += std::fabs(dout[i * hd + c] * v[j * hd + c]);
      D += P[i * T + j] * dP[j];
    }
    for (int64_t j = 0; j <= i; ++j) {
      const double dS = scale * P[i * T + j] * (dP[j] + D);
      for (int64_t c = 0; c < hd; ++c) {
        m.dq[i * hd + c] += dS * std::fabs(k[j * hd + c]);
        m.dk[j * hd + c] += dS * std::fabs(q[i * hd + c]);
        m.dv[j * hd + c] += P[i * T + j] * std::fabs(dout[i * hd + c]);
      }
    }
  }
  return m;
}
// Per-element tolerances: `tol` units of the magnitude, plus 2 eps of the
// value for the add into a pre-filled buffer.
Vec scaled_tolerances(const Vec& magnitude, const Vec& want, double tol) {
  Vec t(want.size());
  for (size_t i = 0; i < want.size(); ++i) t[i] = tol * magnitude[i] + 2 * kEpsF32 * std::fabs(want[i]) + 1e-30;
  return t;
}

// One head of one sequence, p0 = 0: attention_block (out, P), attention_backward (dq, dk, dv +=).
class AttentionCase : public OpCase {
 public:
  AttentionCase(int64_t T, int64_t hd, double scale, bool backward, std::mt19937& rng) : T_(T), hd_(hd) {
    where = shape_name({{"T", double(T)}, {"hd", double(hd)}, {"scale", scale}});
    check_backward = backward;
    const int64_t ld_q = hd + 3, ld_kv = hd + 1;
    input(test::matrix("q", T, hd, ld_q), random_floats(T * hd, rng, scale));
    // k and v share one row stride (the layout of the forward's k|v rows).
    input(test::matrix("k", T, hd, ld_kv), random_floats(T * hd, rng, scale));
    input(test::matrix("v", T, hd, ld_kv), random_floats(T * hd, rng, scale));
    for (Tensor& t : in) t.grad = true, t.mode = Mode::Accumulate;
    out.push_back(test::matrix("out", T, hd, hd + 2));
    out.push_back(test::matrix("P", T, T, T));
    out.back().in_loss = false;
  }
  void forward() override {
    ops::attention_block(out[0].data(), out[0].ld, out[1].data(), T_, in[0].data(), in[0].ld, T_, in[1].data(),
                         in[2].data(), in[1].ld, 0, hd_);
  }
  std::vector<Vec> reference(const std::vector<Vec>& x) const override {
    AttentionRef r = attention_ref(x[0], x[1], x[2], T_, hd_);
    return {r.out, r.P};
  }
  // out within tol of max|v|; P within tol, and exact zeros above the diagonal.
  Vec tolerance(size_t o, const Vec& want) const override {
    const std::vector<Vec> x = input_values();
    const double tol = attention_tol(T_, hd_, attention_ref(x[0], x[1], x[2], T_, hd_).max_score);
    if (o == 0) return Vec(want.size(), tol * test::max_abs(x[2]));
    Vec t(want.size(), tol);
    for (int64_t i = 0; i < T_; ++i)
      for (int64_t j = i + 1; j < T_; ++j) t[i * T_ + j] = 0;
    return t;
  }
  void backward() override {
    std::vector<float> scratch(ops::attention_scratch_floats(T_, hd_), kNaN);
    ops::attention_backward(grad[0].data(), grad[1].data(), grad[2].data(), dout_t[0].data(), dout_t[0].ld,
                            out[1].data(), in[0].data(), in[0].ld, in[1].data(), in[2].data(), in[1].ld, T_, hd_,
                            scratch.data());
  }
  Vec gradient_tolerance(size_t k, const Vec& want) const override {
    const std::vector<Vec> x = input_values();
    const double tol = 4 * attention_tol(T_, hd_, attention_ref(x[0], x[1], x[2], T_, hd_).max_score);
    const AttentionMagnitudes mag = attention_magnitudes(x[0], x[1], x[2], dout[0], T_, hd_);
    return scaled_tolerances(k == 0 ? mag.dq : k == 1 ? mag.dk : mag.dv, want, tol);
  }
  // Where the softmax saturates (scale 10) the true dq and dk are ~1e-10,
  // below the differences' cancellation (1e-16 |L| / h with L ~ 10 and h =
  // 1e-5): the op is judged by the closed form in double, and the form by the
  // differences within that cancellation.
  std::optional<Vec> analytic_gradient(size_t k) const override {
    const std::vector<Vec> x = input_values();
    const Vec& q = x[0];
    const Vec& kk = x[1];
    const Vec& v = x[2];
    const Vec& dO = dout[0];
    const Vec P = attention_ref(q, kk, v, T_, hd_).P;
    const double scale = 1.0 / std::sqrt(double(hd_));
    Vec g(T_ * hd_, 0.0);
    for (int64_t i = 0; i < T_; ++i) {
      Vec dP(i + 1, 0.0);
      double D = 0;
      for (int64_t j = 0; j <= i; ++j) {
        for (int64_t c = 0; c < hd_; ++c) dP[j] += dO[i * hd_ + c] * v[j * hd_ + c];
        D += P[i * T_ + j] * dP[j];
      }
      for (int64_t j = 0; j <= i; ++j) {
        const double p = P[i * T_ + j], dS = scale * p * (dP[j] - D);
        for (int64_t c = 0; c < hd_; ++c) {
          if (k == 0) g[i * hd_ + c] += dS * kk[j * hd_ + c];
          if (k == 1) g[j * hd_ + c] += dS * q[i * hd_ + c];
          if (k == 2) g[j * hd_ + c] += p * dO[i * hd_ + c];
        }
      }
    }
    return g;
  }
  double analytic_tolerance() const override {
    const std::vector<Vec> x = input_values();
    const Vec out = attention_ref(x[0], x[1], x[2], T_, hd_).out;
    double L = 0;  // sum |terms| of the loss dout . out
    for (size_t i = 0; i < out.size(); ++i) L += std::fabs(dout[0][i] * out[i]);
    return 100 * 1e-16 * (1 + L) / 1e-6;  // 100 x the cancellation at the smallest step
  }

 private:
  int64_t T_, hd_;
};

Cases attention_cases(std::mt19937& rng) {
  struct Shape {
    int64_t T, hd;
    bool backward;  // finite differences cost (T hd) (T^2 hd): small shapes only
  };
  Cases cases;
  for (Shape sh : {Shape{1, 4, true}, Shape{2, 4, true}, Shape{4, 5, true}, Shape{5, 6, false}, Shape{9, 8, true},
                   Shape{33, 8, false}, Shape{37, 4, true}, Shape{70, 16, false}, Shape{130, 64, false}})
    for (double scale : {0.1, 1.0, 10.0})
      cases.push_back(std::make_unique<AttentionCase>(sh.T, sh.hd, scale, sh.backward, rng));
  return cases;
}

// ================================================================ cross-entropy

double logsumexp_ref(const Vec& l) {
  double mx = -INFINITY, s = 0;
  for (double x : l) mx = std::max(mx, x);
  for (double x : l) s += std::exp(x - mx);
  return mx + std::log(s);
}

// The loss of one row of logits (cross_entropy_forward) and, fused with it,
// grad_scale d loss / d logits overwriting the logits
// (cross_entropy_forward_backward): the gradient of L = grad_scale loss.
class CrossEntropyCase : public OpCase {
 public:
  CrossEntropyCase(int64_t V, double scale, float grad_scale, std::mt19937& rng) : V_(V), grad_scale_(grad_scale) {
    where = shape_name({{"V", double(V)}, {"scale", scale}, {"grad_scale", grad_scale}});
    check_backward = true;
    auto logits = random_floats(V, rng, scale);
    if (V > 2) logits[V / 2] = float(40 * scale);  // a dominant logit: exp(4000) would overflow without the max
    target_ = int32_t(rng() % V);
    input(test::matrix("logits", 1, V, V), logits).grad = true;
    out.push_back(test::scalar("loss"));
    dout = {Vec{double(grad_scale)}};
  }
  void forward() override { out[0].value = ops::cross_entropy_forward(in[0].data(), V_, target_); }
  std::vector<Vec> reference(const std::vector<Vec>& x) const override {
    return {{logsumexp_ref(x[0]) - x[0][target_]}};
  }
  // Each p_i = exp(l_i - max) / sum carries the rounding of l_i - max
  // (eps |l_i - max| relative, through exp), of exp and of the division
  // (a few eps), and the sum the p-weighted mean of those: so the loss is
  // off by ~eps (2 + spread) and p_i by p_i eps (4 + |l_i - max| + spread).
  Vec tolerance(size_t, const Vec&) const override { return {4 * kEpsF32 * (2 + spread())}; }
  void backward() override {
    std::copy(in[0].data(), in[0].data() + V_, grad[0].data());
    fused_loss_ = ops::cross_entropy_forward_backward(grad[0].data(), V_, target_, grad_scale_);
  }
  // The finite-difference step is 1e-6 |l_i|, up to 4e-3 at scale 100: their
  // truncation (~1e-7) is above the gradient's f32 tolerance, so the op is
  // judged by the formula grad_scale (softmax - onehot), and the formula by them.
  std::optional<Vec> analytic_gradient(size_t) const override {
    const Vec l = in[0].values();
    const double lse = logsumexp_ref(l);
    Vec g(V_);
    for (int64_t i = 0; i < V_; ++i) g[i] = grad_scale_ * (std::exp(l[i] - lse) - (i == target_ ? 1 : 0));
    return g;
  }
  double analytic_tolerance() const override { return 1e-6; }
  Vec gradient_tolerance(size_t, const Vec&) const override {
    const Vec l = in[0].values();
    const double lse = logsumexp_ref(l), mx = *std::max_element(l.begin(), l.end());
    Vec tols(V_);
    for (int64_t i = 0; i < V_; ++i)
      tols[i] = 4 * kEpsF32 * grad_scale_ * (std::exp(l[i] - lse) * (4 + (mx - l[i]) + spread()) + 1);
    return tols;
  }
  // The fused function returns the same loss.
  void also(std::mt19937&) override {
    const double want = reference(input_values())[0][0];
    EXPECT_NEAR(fused_loss_, want, tolerance(0, {want})[0]) << "cross_entropy_forward_backward's loss";
  }

 private:
  double spread() const {
    const Vec l = in[0].values();
    const double lse = logsumexp_ref(l), mx = *std::max_element(l.begin(), l.end());
    double s = 0;
    for (double x : l) s += std::exp(x - lse) * (mx - x);
    return s;
  }
  int64_t V_;
  float grad_scale_;
  int32_t target_ = 0;
  double fused_loss_ = 0;
};

Cases cross_entropy_cases(std::mt19937& rng) {
  Cases cases;
  for (int64_t V : {1, 2, 11, 1000})
    for (double scale : {0.1, 1.0, 10.0, 100.0})
      for (float grad_scale : {1.0f, 1.0f / 7, 0.37f})
        cases.push_back(std::make_unique<CrossEntropyCase>(V, scale, grad_scale, rng));
  return cases;
}

// ================================================================ repeat-and-add, transpose

// y += s z[i mod r] (tile_add), with its transpose dz += s fold(dy) (fold_add) as the backward.
class TileCase : public OpCase {
 public:
  TileCase(int64_t n, int64_t r, float s, std::mt19937& rng) : n_(n), r_(r), s_(s) {
    where = shape_name({{"n", double(n)}, {"r", double(r)}, {"s", s}});
    check_backward = true;
    grad_prefill_scale = 1.0;  // dz starts O(1), the size of the terms the tolerance counts
    Tensor& z = input(test::matrix("z", 1, r, r), random_floats(r, rng, 1.0));
    z.grad = true, z.mode = Mode::Accumulate;
    Tensor y = test::matrix("y", 1, n, n);
    y.mode = Mode::Accumulate;
    out.push_back(y);
  }
  void forward() override { ops::tile_add(out[0].data(), in[0].data(), n_, r_, s_); }
  std::vector<Vec> reference(const std::vector<Vec>& x) const override {
    Vec y(n_);
    for (int64_t i = 0; i < n_; ++i) y[i] = prefill[0][i] + double(s_) * x[0][i % r_];
    return {y};
  }
  // One multiply-add of O(1) values per element.
  Vec tolerance(size_t, const Vec& want) const override {
    return Vec(want.size(), 2 * kEpsF32 * (1 + std::fabs(s_)) * 5);
  }
  void backward() override { ops::fold_add(grad[0].data(), dout_t[0].data(), n_, r_, s_); }
  // L is linear in z: the differences are exact up to cancellation in L,
  // ~1e-16 sum|dy y| / h < 1e-6 for n <= 2048.
  std::optional<Vec> analytic_gradient(size_t) const override {
    Vec dz(r_, 0.0);
    for (int64_t i = 0; i < n_; ++i) dz[i % r_] += double(s_) * dout[0][i];
    return dz;
  }
  double analytic_tolerance() const override { return 1e-5; }
  // Each dz[j] sums n / r terms of size ~1: (n / r + 2) eps of that.
  Vec gradient_tolerance(size_t, const Vec& want) const override {
    return Vec(want.size(), (n_ / r_ + 2) * kEpsF32 * (1 + std::fabs(s_)) * 5);
  }
  // Transposes: <fold(dy), z> == <dy, tile(z)>, from zero buffers.
  void also(std::mt19937&) override {
    std::vector<float> tiled(n_, 0.0f), folded(r_, 0.0f);
    ops::tile_add(tiled.data(), in[0].data(), n_, r_, s_);
    ops::fold_add(folded.data(), dout_t[0].data(), n_, r_, s_);
    double lhs = 0, rhs = 0, mag = 0;
    for (int64_t j = 0; j < r_; ++j) lhs += double(folded[j]) * in[0].data()[j];
    for (int64_t i = 0; i < n_; ++i) {
      rhs += double(dout_t[0].data()[i]) * tiled[i];
      mag += std::fabs(double(dout_t[0].data()[i]) * tiled[i]);
    }
    EXPECT_NEAR(lhs, rhs, (n_ / r_ + 4) * kEpsF32 * mag) << "tile and fold are transposes";
  }

 private:
  int64_t n_, r_;
  float s_;
};

Cases tile_cases(std::mt19937& rng) {
  struct Tiling {
    int64_t n, r;
  };
  Cases cases;
  for (Tiling tl :
       {Tiling{12, 4}, Tiling{13, 4}, Tiling{7, 7}, Tiling{5, 8}, Tiling{33, 1}, Tiling{2048, 16}, Tiling{2048, 96}})
    for (float s : {1.0f, -0.5f, 3.0f}) cases.push_back(std::make_unique<TileCase>(tl.n, tl.r, s, rng));
  return cases;
}

// out (cols, rows), dense, = in (rows, cols) with row stride ld; 4 floats past the end must stay.
class TransposeCase : public OpCase {
 public:
  TransposeCase(int64_t rows, int64_t cols, std::mt19937& rng) : rows_(rows), cols_(cols) {
    where = shape_name({{"rows", double(rows)}, {"cols", double(cols)}});
    input(test::matrix("in", rows, cols, cols + 3), random_floats(rows * cols, rng, 1.0));
    out.push_back(test::matrix("out", cols, rows, rows, 0, 4));
  }
  void forward() override { ops::transpose(out[0].data(), in[0].data(), rows_, cols_, in[0].ld); }
  std::vector<Vec> reference(const std::vector<Vec>& x) const override {
    Vec t(rows_ * cols_);
    for (int64_t r = 0; r < rows_; ++r)
      for (int64_t c = 0; c < cols_; ++c) t[c * rows_ + r] = x[0][r * cols_ + c];
    return {t};
  }
  // A copy: exact.
  Vec tolerance(size_t, const Vec& want) const override { return Vec(want.size(), 0.0); }

 private:
  int64_t rows_, cols_;
};

Cases transpose_cases(std::mt19937& rng) {
  Cases cases;
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {3, 5}, {33, 70}, {64, 64}, {70, 33}})
    cases.push_back(std::make_unique<TransposeCase>(rows, cols, rng));
  return cases;
}

// ================================================================ the weight gradient

// dW (M, K) += scale dy^T x, dy (n, M) and x (n, K) strided (ops/rows.h, one thread here).
class WeightGradCase : public OpCase {
 public:
  WeightGradCase(int64_t M, int64_t K, int64_t n, float scale, std::mt19937& rng) : M_(M), K_(K), n_(n), s_(scale) {
    where = shape_name({{"M", double(M)}, {"K", double(K)}, {"n", double(n)}, {"scale", scale}});
    input(test::matrix("dy", n, M, M + 3), random_floats(n * M, rng, 1.0));
    input(test::matrix("x", n, K, K + 2), random_floats(n * K, rng, 1.0));
    Tensor dW = test::matrix("dW", M, K, K);
    dW.mode = Mode::Accumulate;
    out.push_back(dW);
  }
  void forward() override {
    ThreadPool pool(1);
    std::vector<float> scratch(ops::weight_grad_scratch_floats(M_, K_, n_, pool.size()), kNaN);
    ops::weight_grad(pool, out[0].data(), in[0].data(), in[0].ld, M_, in[1].data(), in[1].ld, K_, n_, s_,
                     scratch.data());
  }
  std::vector<Vec> reference(const std::vector<Vec>& x) const override {
    Vec dW = prefill[0];
    for (int64_t m = 0; m < M_; ++m)
      for (int64_t k = 0; k < K_; ++k)
        for (int64_t t = 0; t < n_; ++t) dW[m * K_ + k] += double(s_) * x[0][t * M_ + m] * x[1][t * K_ + k];
    return {dW};
  }
  // An f32 sum of n products and the start value, (n + 2) eps sum|terms|
  // (Higham), plus one rounding of scale * dy.
  Vec tolerance(size_t, const Vec&) const override {
    const std::vector<Vec> x = input_values();
    Vec tol(M_ * K_);
    for (int64_t m = 0; m < M_; ++m)
      for (int64_t k = 0; k < K_; ++k) {
        double mag = std::fabs(prefill[0][m * K_ + k]);
        for (int64_t t = 0; t < n_; ++t) mag += std::fabs(double(s_) * x[0][t * M_ + m] * x[1][t * K_ + k]);
        tol[m * K_ + k] = (n_ + 4) * kEpsF32 * mag;
      }
    return tol;
  }

 private:
  int64_t M_, K_, n_;
  float s_;
};

Cases weight_grad_cases(std::mt19937& rng) {
  Cases cases;
  for (int64_t M : {1, 5, 70})
    for (int64_t K : {1, 17, 65})
      for (int64_t n : {1, 3, 33})
        for (float scale : {1.0f, 0.37f}) cases.push_back(std::make_unique<WeightGradCase>(M, K, n, scale, rng));
  return cases;
}

// ================================================================ the table

const std::vector<test::Op>& op_table() {
  const std::vector<DType> kFormats = {DType::BF16, DType::F16,  DType::F32, DType::Q8_0,
                                       DType::Q4_0, DType::Q4_K, DType::Q6_K};
  auto sizes = [](auto make) {
    return [make](DType, std::mt19937& rng) {
      Cases cases;
      for (int64_t n : kVectorSizes) cases.push_back(make(n, rng));
      return cases;
    };
  };
  static const std::vector<test::Op> table = {
      {"matmul_rows", true, kFormats, [](DType f, std::mt19937& rng) { return matmul_cases({Kernel::Rows}, f, rng); }},
      {"matmul_rows_bf16dot", true, {DType::BF16},
       [](DType f, std::mt19937& rng) { return matmul_cases({Kernel::Rows, true}, f, rng); }},
      {"matmul_cols", true, kFormats, [](DType f, std::mt19937& rng) { return matmul_cases({Kernel::Cols}, f, rng); }},
      {"matmul_cols_bf16dot", true, {DType::BF16},
       [](DType f, std::mt19937& rng) { return matmul_cases({Kernel::Cols, true}, f, rng); }},
      {"dot", true, {DType::F32}, sizes([](int64_t n, std::mt19937& rng) {
         return std::make_unique<ReductionCase>(true, n, rng);
       })},
      {"sum", true, {DType::F32}, sizes([](int64_t n, std::mt19937& rng) {
         return std::make_unique<ReductionCase>(false, n, rng);
       })},
      {"axpy", true, {DType::F32}, sizes([](int64_t n, std::mt19937& rng) {
         return std::make_unique<AxpyCase>(n, rng);
       })},
      {"rmsnorm", true, {DType::F32}, [](DType, std::mt19937& rng) { return rmsnorm_cases(rng); }},
      {"attention", true, {DType::F32}, [](DType, std::mt19937& rng) { return attention_cases(rng); }},
      {"weight_grad", true, {DType::F32}, [](DType, std::mt19937& rng) { return weight_grad_cases(rng); }},
      {"rope", false, {DType::F32}, [](DType, std::mt19937& rng) { return rope_cases(rng); }},
      {"swiglu", false, {DType::F32}, [](DType, std::mt19937& rng) { return swiglu_cases(rng); }},
      {"phi", false, {DType::F32}, [](DType, std::mt19937& rng) { return phi_cases(rng); }},
      {"cross_entropy", false, {DType::F32}, [](DType, std::mt19937& rng) { return cross_entropy_cases(rng); }},
      {"tile_fold", false, {DType::F32}, [](DType, std::mt19937& rng) { return tile_cases(rng); }},
      {"transpose", false, {DType::F32}, [](DType, std::mt19937& rng) { return transpose_cases(rng); }},
  };
  return table;
}

// One test per op x format x target; target 0 is the dispatcher's choice,
// for the ops no dispatch reaches.
struct OpParam {
  size_t op;
  DType format;
  int64_t target;
};

std::vector<OpParam> op_params() {
  std::vector<OpParam> params;
  for (size_t i = 0; i < op_table().size(); ++i)
    for (DType f : op_table()[i].formats) {
      if (!op_table()[i].simd) {
        params.push_back({i, f, 0});
        continue;
      }
      for (int64_t t : ops::simd_targets_available()) params.push_back({i, f, t});
    }
  return params;
}

class OpHarness : public ::testing::TestWithParam<OpParam> {};

TEST_P(OpHarness, ForwardAndBackwardMatchDouble) {
  const test::Op& op = op_table()[GetParam().op];
  test::ForceTarget target(GetParam().target);
  std::mt19937 rng(unsigned(GetParam().op + 1));
  const Cases cases = op.cases(GetParam().format, rng);
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) test::run_op_case(op.name, *c, rng);
}

INSTANTIATE_TEST_SUITE_P(Ops, OpHarness, ::testing::ValuesIn(op_params()),
                         [](const ::testing::TestParamInfo<OpParam>& info) {
                           const OpParam& p = info.param;
                           return op_table()[p.op].name + "_" + std::string(dtype_name(p.format)) + "_" +
                                  (p.target ? ops::simd_target_name(p.target) : std::string("dispatch"));
                         });

// ================================================================ properties of single ops

class Products : public ::testing::TestWithParam<std::tuple<int64_t, Kernel, DType>> {
 protected:
  void SetUp() override { ops::set_simd_target_for_test(std::get<0>(GetParam())); }
  void TearDown() override { ops::set_simd_target_for_test(0); }
  const Product p{std::get<1>(GetParam())};
  const DType dtype = std::get<2>(GetParam());
};

// The same bits however the outputs are split between calls (threads) and the
// tokens grouped into calls (batching, padding): ops.h promises this of
// matmul_cols (one chain per element), and rows are independent in
// matmul_rows (docs/architecture.md).
void check_splits(const Product& p, DType dtype) {
  std::mt19937 rng(11);
  const Shapes shapes = shapes_of(dtype);
  for (int64_t rows : shapes.rows)
    for (int64_t cols : shapes.cols) {
      TestMatrix m(dtype, rows, cols, cols + 5, rng);
      const MatrixRef& w = m.ref;
      const int64_t out = p.out(w), K = p.K(w), ldx = K + 1, ldy = out + 3;
      for (int64_t T : shapes.tokens) {
        const auto x = random_floats(T * ldx, rng, 1.0);
        for (bool accumulate : {false, true}) {
          const auto y0 = random_floats(T * ldy, rng, 1.0);
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

TEST_P(Products, SplitsGiveTheSameBits) { check_splits(p, dtype); }

// BF16 products keep the rows' independence (ops.h): the same bits however
// rows (columns, for matmul_cols) and tokens are split, and the same bits from
// activations rounded beforehand (the forward's product_region, product_t) as
// from the f32 rows.
TEST(Bf16Products, SplitsAndPreRoundedInputsGiveTheSameBits) {
  if (!ops::bf16_dot_available()) GTEST_SKIP() << "this CPU has no AVX512_BF16 (or the target is below AVX-512)";
  check_splits(Product{Kernel::Rows, true}, DType::BF16);
  check_splits(Product{Kernel::Cols, true}, DType::BF16);
  std::mt19937 rng(13);
  test::Bf16Products on;
  for (int64_t cols : kCols)
    for (int64_t T : kTokens) {
      TestMatrix m(DType::BF16, 19, cols, cols + 2, rng);
      const int64_t ldx = cols + 4, ldy = 21;
      const auto x = random_floats(T * ldx, rng, 1.0);
      std::vector<float> direct(T * ldy, 0.0f), rounded(T * ldy, 0.0f);
      ops::matmul_rows(direct.data(), ldy, x.data(), ldx, T, m.ref, 0, 19, false);
      ops::Bf16Activations a;
      ops::round_activations_bf16(x.data(), ldx, T, cols, a);
      ops::matmul_rows(rounded.data(), ldy, a, m.ref, 0, 19, false);
      ASSERT_EQ(std::memcmp(direct.data(), rounded.data(), direct.size() * sizeof(float)), 0)
          << "cols=" << cols << " T=" << T;
    }
  // matmul_cols: w (rows, 19) over x (T, rows), the rows rounded in two ranges.
  for (int64_t rows : kRows)
    for (int64_t T : kTokens) {
      TestMatrix m(DType::BF16, rows, 19, 21, rng);
      const int64_t ldx = rows + 3, ldy = 23;
      const auto x = random_floats(T * ldx, rng, 1.0);
      std::vector<float> direct(T * ldy, 0.0f), rounded(T * ldy, 0.0f);
      ops::matmul_cols(direct.data(), ldy, x.data(), ldx, T, m.ref, 0, 19, false);
      ops::Bf16Activations a;
      ops::size_activations_bf16(T, rows, a);
      ops::round_activations_bf16_rows(x.data(), ldx, T / 2, T, a);
      ops::round_activations_bf16_rows(x.data(), ldx, 0, T / 2, a);
      ops::matmul_cols(rounded.data(), ldy, a, m.ref, 0, 19, false);
      ASSERT_EQ(std::memcmp(direct.data(), rounded.data(), direct.size() * sizeof(float)), 0)
          << "rows=" << rows << " T=" << T;
    }
}

// round_activations_bf16 is f32_to_bf16 on every value (nearest, ties to even,
// NaN quiet, infinities and subnormals kept), zeros past K in each row of ld =
// K rounded up to 32; the pre-rounded product refuses weights it cannot take.
TEST(Bf16Products, RoundingIsF32ToBf16) {
  std::mt19937 rng(14);
  const int64_t T = 3, K = 45, ldx = 50;
  std::vector<float> x = random_floats(T * ldx, rng, 3.0);
  const float special[] = {1.0f + 0x1p-8f,  // a tie: to even (1.0)
                           1.0f + 0x3p-8f,  // a tie: to even (up)
                           std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(), kNaN,
                           0x1.8p-130f,  // subnormal
                           -0.0f, std::numeric_limits<float>::max()};
  std::copy(std::begin(special), std::end(special), x.begin() + ldx + 3);
  ops::Bf16Activations a;
  ops::round_activations_bf16(x.data(), ldx, T, K, a);
  ASSERT_EQ(a.ld, 64);
  ASSERT_EQ(a.v.size(), size_t(T * 64));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < a.ld; ++k) {
      const uint16_t want = k < K ? f32_to_bf16(x[t * ldx + k]) : 0;
      ASSERT_EQ(a.v[t * a.ld + k], want) << "t=" << t << " k=" << k << " x=" << (k < K ? x[t * ldx + k] : 0.0f);
    }
  EXPECT_EQ(a.v[a.ld + 3], 0x3f80);  // 1 + 2^-8 -> 1
  EXPECT_EQ(a.v[a.ld + 4], 0x3f82);              // 1 + 3 2^-8 -> 1 + 2^-6
  EXPECT_TRUE(std::isnan(bf16_to_f32(a.v[a.ld + 7])));
  std::vector<float> f32w(4 * K, 0.5f), y(4);
  const MatrixRef f32m{f32w.data(), DType::F32, 4, K, 0};
  EXPECT_THROW(ops::matmul_rows(y.data(), 4, a, f32m, 0, 4, false), Error);  // not BF16, and not asked for
}

// A block-format matrix gives, bit for bit, what the F32 matrix of its
// dequantized values gives (ops.h), in both kernels: decode from the blocks
// in place, and batches through widened tiles, alike.
class BlockProducts : public Products {};

// matmul_cols of a block format is the F32 kernel over the dequantized matrix,
// bit for bit; matmul_rows (integer products) gives every token's row the
// bits it gets alone, and every row range the bits of the whole: the
// batching invariance the forward's rows rest on (ops.h), on every target.
TEST_P(BlockProducts, AreTheirDequantizedF32OrBatchInvariant) {
  std::mt19937 rng(12);
  const Shapes shapes = shapes_of(dtype);
  for (int64_t rows : shapes.rows)
    for (int64_t cols : shapes.cols) {
      TestMatrix m(dtype, rows, cols, 0, rng);
      const int64_t out = p.out(m.ref), K = p.K(m.ref), ldx = K + 2, ldy = out + 1;
      for (int64_t T : shapes.tokens) {
        const auto x = random_floats(T * ldx, rng, 1.0);
        for (bool accumulate : {false, true}) {
          const auto y0 = random_floats(T * ldy, rng, 1.0);
          std::vector<float> blocks = y0, other = y0;
          p.simd(blocks.data(), ldy, x.data(), ldx, T, m.ref, 0, out, accumulate);
          if (p.kernel == Kernel::Cols) {
            p.simd(other.data(), ldy, x.data(), ldx, T, m.widened_ref, 0, out, accumulate);
          } else {
            for (int64_t t = 0; t < T; ++t) {  // each token alone, its rows in two ranges
              const int64_t split = out / 3;
              p.simd(other.data() + t * ldy, ldy, x.data() + t * ldx, ldx, 1, m.ref, 0, split, accumulate);
              p.simd(other.data() + t * ldy, ldy, x.data() + t * ldx, ldx, 1, m.ref, split, out, accumulate);
            }
          }
          ASSERT_EQ(std::memcmp(blocks.data(), other.data(), blocks.size() * sizeof(float)), 0)
              << dtype_name(dtype) << " rows=" << rows << " cols=" << cols << " T=" << T
              << " accumulate=" << accumulate;
        }
      }
    }
}

// round_activations: per group d = max|x| / 127, q the nearest integer to
// x 127 / max|x| (ties to even), so |x - d q| <= d / 2 (plus the two roundings of d and of
// 127 / max|x|) and |q| <= 127, the extreme value at +-127; the sums are the
// groups' sums of q; a non-finite value makes its group's d NaN; and the bits
// are the same on every target.
TEST(RoundActivations, BoundTheRoundingAndAgreeOnEveryTarget) {
  std::mt19937 rng(21);
  for (int64_t group : {32, 256}) {
    const int64_t T = 3, K = 2 * group, ldx = K + 5;
    std::vector<float> x = random_floats(T * ldx, rng, 3.0);
    for (int64_t k = 0; k < group; ++k) x[ldx + k] = 0.0f;  // token 1, group 0: all zeros
    x[2 * ldx + group + 7] = std::numeric_limits<float>::infinity();  // token 2, group 1
    // Token 0, group 0: max 127, so q = x: ties to even, and a value just under a half.
    const float ties[] = {127.0f, 2.5f, 3.5f, -2.5f, 0.49999997f};
    const int want_q[] = {127, 2, 4, -2, 0};
    std::copy(std::begin(ties), std::end(ties), x.begin());
    ops::ActivationBlocks first;
    bool have_first = false;
    for (int64_t target : ops::simd_targets_available()) {
      test::ForceTarget force(target);
      ops::ActivationBlocks a;
      ops::round_activations(x.data(), ldx, T, K, group, a);
      ASSERT_EQ(a.q.size(), size_t(T * K));
      for (int k = 0; k < 5; ++k) EXPECT_EQ(a.q[k], want_q[k]) << "x = " << ties[k] << ", " << ops::simd_target_name(target);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t g = 0; g < K / group; ++g) {
          const float d = a.d[t * (K / group) + g];
          if (t == 2 && g == 1) {
            EXPECT_TRUE(std::isnan(d)) << "a group holding an infinity";
            continue;
          }
          float amax = 0;
          for (int64_t k = 0; k < group; ++k) amax = std::max(amax, std::fabs(x[t * ldx + g * group + k]));
          EXPECT_EQ(d, amax / 127.0f);
          int peak = 0;
          for (int64_t k = 0; k < group; ++k) {
            const int q = a.q[t * K + g * group + k];
            EXPECT_LE(std::abs(q), 127);
            peak = std::max(peak, std::abs(q));
            EXPECT_LE(std::fabs(double(x[t * ldx + g * group + k]) - double(d) * q), (0.5 + 1e-5) * d + 1e-30)
                << "group " << group << " t=" << t << " k=" << g * group + k;
          }
          EXPECT_EQ(peak, amax > 0 ? 127 : 0);
        }
      for (int64_t t = 0; t < T; ++t)
        for (int64_t s = 0; s < K / 32; ++s) {
          int sum = 0;
          for (int64_t k = 0; k < 32; ++k) sum += a.q[t * K + 32 * s + k];
          EXPECT_EQ(a.sums[t * (K / 32) + s], sum);
        }
      if (!have_first) {
        first = a, have_first = true;
      } else {
        EXPECT_EQ(a.q, first.q) << ops::simd_target_name(target);
        EXPECT_EQ(std::memcmp(a.d.data(), first.d.data(), a.d.size() * sizeof(float)), 0)
            << ops::simd_target_name(target);
      }
    }
  }
  ops::ActivationBlocks a;
  EXPECT_THROW(ops::round_activations(nullptr, 40, 1, 40, 32, a), Error);
  EXPECT_THROW(ops::round_activations(nullptr, 64, 1, 64, 16, a), Error);
}

std::string product_name(const ::testing::TestParamInfo<Products::ParamType>& info) {
  return ops::simd_target_name(std::get<0>(info.param)) +
         (std::get<1>(info.param) == Kernel::Rows ? "_rows_" : "_cols_") +
         std::string(dtype_name(std::get<2>(info.param)));
}

INSTANTIATE_TEST_SUITE_P(Simd, Products,
                         ::testing::Combine(::testing::ValuesIn(ops::simd_targets_available()),
                                            ::testing::Values(Kernel::Rows, Kernel::Cols),
                                            ::testing::Values(DType::BF16, DType::F16, DType::F32, DType::Q8_0,
                                                              DType::Q4_0, DType::Q4_K, DType::Q6_K)),
                         product_name);

INSTANTIATE_TEST_SUITE_P(Simd, BlockProducts,
                         ::testing::Combine(::testing::ValuesIn(ops::simd_targets_available()),
                                            ::testing::Values(Kernel::Rows, Kernel::Cols),
                                            ::testing::Values(DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K)),
                         product_name);

// dequantize_tile widens a block format's rows as dequantize_row does, bit for
// bit, on every target (the kernels' values), at column ranges of whole blocks.
TEST(Formats, DequantizeTileIsDequantizeRowOnEveryTarget) {
  std::mt19937 rng(14);
  for (DType dtype : {DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K, DType::BF16}) {
    const int64_t B = weight_format(dtype, "test").block_elems, cols = 5 * B;
    TestMatrix m(dtype, 6, cols, cols + 1, rng);
    for (int64_t target : ops::simd_targets_available()) {
      test::ForceTarget force(target);
      for (auto [c0, c1] : {std::pair<int64_t, int64_t>{0, cols}, {B, 3 * B}, {4 * B, 5 * B}, {2 * B, 2 * B}}) {
        const int64_t ldo = c1 - c0 + 3;
        std::vector<float> tile(5 * ldo, kNaN), want(5 * ldo, kNaN);
        ops::dequantize_tile(tile.data(), ldo, m.ref, 1, 6, c0, c1);
        for (int64_t r = 1; r < 6; ++r)
          std::copy(m.widened_f32.begin() + r * cols + c0, m.widened_f32.begin() + r * cols + c1,
                    want.begin() + (r - 1) * ldo);
        EXPECT_TRUE(test::same_bits(tile, want))
            << dtype_name(dtype) << " " << ops::simd_target_name(target) << " columns [" << c0 << ", " << c1 << ")";
      }
    }
    EXPECT_THROW(ops::dequantize_tile(nullptr, 0, m.ref, 0, 1, 0, cols + B), Error) << dtype_name(dtype);
    if (B > 1) {
      EXPECT_THROW(ops::dequantize_tile(nullptr, 0, m.ref, 0, 1, 1, B), Error) << dtype_name(dtype);
    }
  }
}

// One row per format with a kernel, consistent with the dtype it names: one
// element of dtype_size bytes, or a block format's block as ops/quant.h lays it out.
TEST(Formats, TableRowsAreTheirDtypes) {
  for (const WeightFormat& f : kWeightFormats) {
    EXPECT_EQ(f.name, dtype_name(f.dtype));
    EXPECT_EQ(find_weight_format(f.dtype), &f);
    if (is_quantized(f.dtype)) {
      EXPECT_EQ(dtype_size(f.dtype), 0u) << f.name;
      EXPECT_EQ(f.block_elems, f.dtype == DType::Q8_0 || f.dtype == DType::Q4_0 ? 32 : 256) << f.name;
      EXPECT_EQ(static_cast<int64_t>(quantized_bytes(f.dtype, f.block_elems)), f.block_bytes) << f.name;
    } else {
      EXPECT_EQ(f.block_elems, 1) << f.name;
      EXPECT_EQ(f.block_bytes, static_cast<int64_t>(dtype_size(f.dtype))) << f.name;
    }
  }
  EXPECT_EQ(weight_format_names(), "BF16, F16, F32, Q8_0, Q4_0, Q4_K or Q6_K");
  const uint16_t data[21] = {};
  EXPECT_EQ((MatrixRef{data, DType::BF16, 3, 5, 7}.row_bytes()), 14);
  EXPECT_EQ((MatrixRef{data, DType::F32, 3, 5, 0}.row_bytes()), 20);
  EXPECT_EQ((MatrixRef{data, DType::Q8_0, 3, 64, 96}.row_bytes()), 3 * 34);
  EXPECT_EQ((MatrixRef{data, DType::Q4_K, 3, 512, 0}.row_bytes()), 2 * 144);
  EXPECT_EQ((MatrixRef{data, DType::Q6_K, 3, 256, 0}.row_bytes()), 210);
  EXPECT_EQ((MatrixRef{data, DType::Q4_0, 3, 32, 0}.row_bytes()), 18);
  // Columns or a stride that are not whole blocks: an error naming both.
  for (const MatrixRef m : {MatrixRef{data, DType::Q8_0, 3, 40, 0}, MatrixRef{data, DType::Q4_K, 3, 256, 300}}) {
    try {
      (void)m.row_bytes();
      FAIL() << "no error for " << m.cols << " columns, stride " << m.stride;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("are not whole"), std::string::npos) << e.what();
    }
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
      EXPECT_NE(
          std::string(e.what()).find("dtype I8 have no kernel (expected BF16, F16, F32, Q8_0, Q4_0, Q4_K or Q6_K)"),
          std::string::npos)
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

TEST(SwiGlu, SaturatesWithoutNaN) {
  const std::vector<float> g = {-1000, -100, -30, 30, 100, 1000}, u(6, 2.0f), dh(6, 1.0f);
  std::vector<float> h(6), dg(6), du(6);
  ops::swiglu_forward(h.data(), g.data(), u.data(), 6);
  ops::swiglu_backward(dg.data(), du.data(), dh.data(), g.data(), u.data(), 6);
  for (int i = 0; i < 6; ++i) {
    const double s = 1.0 / (1.0 + std::exp(-double(g[i])));
    EXPECT_NEAR(h[i], 2 * silu_ref(g[i]), 1e-5 * std::fabs(g[i])) << g[i];
    EXPECT_NEAR(du[i], silu_ref(g[i]), 1e-5 * std::fabs(g[i])) << g[i];
    EXPECT_NEAR(dg[i], 2 * s * (1 + g[i] * (1 - s)), 1e-5) << g[i];
  }
}

// phi' at its kink, at 0 and in the saturated tails (no NaN); the harness's
// "phi" op checks it against finite differences everywhere else.
TEST(Nonlinearity, DerivativeAtKinksAndTails) {
  EXPECT_EQ(nonlinearity_derivative(Nonlinearity::ReLU, 0.0f), 0.0f);
  EXPECT_EQ(nonlinearity_derivative(Nonlinearity::ReLU, -0.0f), 0.0f);
  EXPECT_EQ(nonlinearity_derivative(Nonlinearity::ReLU, 1e-30f), 1.0f);
  EXPECT_EQ(nonlinearity_derivative(Nonlinearity::Identity, 0.0f), 1.0f);
  EXPECT_EQ(nonlinearity_derivative(Nonlinearity::Identity, -1e30f), 1.0f);
  EXPECT_NEAR(nonlinearity_derivative(Nonlinearity::GELU, 0.0f), 0.5f, 1e-7);
  EXPECT_NEAR(nonlinearity_derivative(Nonlinearity::SiLU, 0.0f), 0.5f, 1e-7);
  for (float z : {-1000.0f, -100.0f, 100.0f, 1000.0f}) {
    EXPECT_NEAR(nonlinearity_derivative(Nonlinearity::GELU, z), z > 0 ? 1.0f : 0.0f, 1e-6) << z;
    EXPECT_NEAR(nonlinearity_derivative(Nonlinearity::SiLU, z), z > 0 ? 1.0f : 0.0f, 1e-6) << z;
  }
}

// The forward runs attention in blocks of queries (prefill over the KV cache,
// decode one query at a time, training blocks of the saved P): any split of a
// sequence into blocks gives the whole sequence's values bit for bit, because
// each score is one dot product of hd and each row's softmax and output run
// over that row's own visible keys, whatever the block (attention_block's guarantee).
TEST(Attention, BlocksOfQueriesEqualTheWholeSequence) {
  std::mt19937 rng(9);
  const int64_t T = 37, hd = 8, ld = 3 * hd;  // q | k | v side by side, as the forward's q|k|v rows
  const auto qkv = random_floats(T * ld, rng, 2.0);
  const float *q = qkv.data(), *k = qkv.data() + hd, *v = qkv.data() + 2 * hd;
  std::vector<float> whole_out(T * hd), whole_P(T * T);
  ops::attention_block(whole_out.data(), hd, whole_P.data(), T, q, ld, T, k, v, ld, 0, hd);
  for (int64_t block : {1, 4, 16, 20}) {
    std::vector<float> out(T * hd, kNaN), S(block * T, kNaN);
    for (int64_t i0 = 0; i0 < T; i0 += block) {
      const int64_t tq = std::min(block, T - i0);
      ops::attention_block(out.data() + i0 * hd, hd, S.data(), T, q + i0 * ld, ld, tq, k, v, ld, i0, hd);
      for (int64_t i = 0; i < tq; ++i)
        for (int64_t p = 0; p < i0 + tq; ++p)
          ASSERT_EQ(S[i * T + p], whole_P[(i0 + i) * T + p]) << "block " << block << " row " << i0 + i << " key " << p;
    }
    EXPECT_EQ(out, whole_out) << "block " << block;
  }
}

// One head's loss L = sum(dout * attention(q, k, v)) in double.
double attention_loss(const Vec& q, const Vec& k, const Vec& v, const Vec& dout, int64_t T, int64_t hd) {
  return test::dot(dout, attention_ref(q, k, v, T, hd).out);
}

// Two query heads of one KV group: each calls the backward in turn on the same dk, dv.
TEST(Attention, HeadsOfOneGroupAccumulateIntoSharedDkDv) {
  std::mt19937 rng(8);
  const int64_t T = 6, hd = 4, ld_q = 2 * hd, ld_kv = hd;  // both query heads in one (T, 2 hd) buffer
  const auto q = random_floats(T * 2 * hd, rng, 1.0), k = random_floats(T * hd, rng, 1.0),
             v = random_floats(T * hd, rng, 1.0), dout = random_floats(T * 2 * hd, rng, 1.0);
  const Vec kd = to_double(k), vd = to_double(v);
  auto head = [&](const std::vector<float>& m, int h) {  // head h of a (T, 2 hd) buffer, dense
    Vec d(T * hd);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < hd; ++c) d[t * hd + c] = m[t * 2 * hd + h * hd + c];
    return d;
  };
  const Vec q0 = head(q, 0), q1 = head(q, 1), o0 = head(dout, 0), o1 = head(dout, 1);
  auto loss = [&](const Vec& qa, const Vec& qb, const Vec& kv, const Vec& vv) {
    return attention_loss(qa, kv, vv, o0, T, hd) + attention_loss(qb, kv, vv, o1, T, hd);
  };
  const Vec gq0 = test::central_differences([&](const Vec& x) { return loss(x, q1, kd, vd); }, q0);
  const Vec gq1 = test::central_differences([&](const Vec& x) { return loss(q0, x, kd, vd); }, q1);
  const Vec gk = test::central_differences([&](const Vec& x) { return loss(q0, q1, x, vd); }, kd);
  const Vec gv = test::central_differences([&](const Vec& x) { return loss(q0, q1, kd, x); }, vd);

  std::vector<float> out(T * 2 * hd), P0(T * T), P1(T * T), scratch(ops::attention_scratch_floats(T, hd));
  ops::attention_block(out.data(), 2 * hd, P0.data(), T, q.data(), ld_q, T, k.data(), v.data(), ld_kv, 0, hd);
  ops::attention_block(out.data() + hd, 2 * hd, P1.data(), T, q.data() + hd, ld_q, T, k.data(), v.data(), ld_kv, 0, hd);
  std::vector<float> dq(T * 2 * hd, 0.0f), dk(T * hd, 0.0f), dv(T * hd, 0.0f);
  ops::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), 2 * hd, P0.data(), q.data(), ld_q, k.data(),
                          v.data(), ld_kv, T, hd, scratch.data());
  ops::attention_backward(dq.data() + hd, dk.data(), dv.data(), dout.data() + hd, 2 * hd, P1.data(), q.data() + hd,
                          ld_q, k.data(), v.data(), ld_kv, T, hd, scratch.data());
  const double max_score =
      std::max(attention_ref(q0, kd, vd, T, hd).max_score, attention_ref(q1, kd, vd, T, hd).max_score);
  const double tol = 4 * attention_tol(T, hd, max_score);
  const AttentionMagnitudes m0 = attention_magnitudes(q0, kd, vd, o0, T, hd),
                            m1 = attention_magnitudes(q1, kd, vd, o1, T, hd);
  Vec dq0(T * hd), dq1(T * hd);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < hd; ++c) dq0[t * hd + c] = dq[t * 2 * hd + c], dq1[t * hd + c] = dq[t * 2 * hd + hd + c];
  EXPECT_TRUE(test::within("attention group dq", gq0, dq0, scaled_tolerances(m0.dq, gq0, tol)));
  EXPECT_TRUE(test::within("attention group dq", gq1, dq1, scaled_tolerances(m1.dq, gq1, tol)));
  EXPECT_TRUE(
      test::within("attention group dk", gk, to_double(dk), scaled_tolerances(test::plus(m0.dk, m1.dk), gk, tol)));
  EXPECT_TRUE(
      test::within("attention group dv", gv, to_double(dv), scaled_tolerances(test::plus(m0.dv, m1.dv), gv, tol)));
}

TEST(CrossEntropy, RejectsATargetOutsideTheVocabulary) {
  std::vector<float> logits(5, 0.0f);
  EXPECT_THROW(ops::cross_entropy_forward(logits.data(), 5, 5), Error);
  EXPECT_THROW(ops::cross_entropy_forward_backward(logits.data(), 5, -1, 1.0f), Error);
}

// tile_add_range over an output chunk [i0, i1) adds exactly what tile_add
// adds there (the same single multiply-add per element), and nothing outside.
TEST(TileFold, RangeIsTheTileOfItsChunk) {
  struct Tiling {
    int64_t n, r;
  };
  std::mt19937 rng(12);
  for (Tiling tl : {Tiling{12, 4}, Tiling{13, 4}, Tiling{200, 6}, Tiling{2048, 96}})
    for (int64_t i0 : {int64_t{0}, int64_t{1}, int64_t{5}, tl.n / 2})
      for (int64_t i1 : {i0, i0 + 1, tl.n}) {
        if (i1 > tl.n) continue;
        const auto z = random_floats(tl.r, rng, 1.0), y0 = random_floats(tl.n, rng, 1.0);
        auto whole = y0, range = y0;
        ops::tile_add(whole.data(), z.data(), tl.n, tl.r, 0.75f);
        ops::tile_add_range(range.data(), z.data(), i0, i1, tl.r, 0.75f);
        for (int64_t i = 0; i < tl.n; ++i) {
          const float want = i >= i0 && i < i1 ? whole[i] : y0[i];
          ASSERT_EQ(range[i], want) << "n=" << tl.n << " r=" << tl.r << " [" << i0 << ", " << i1 << ") i=" << i;
        }
      }
}

// ================================================================ the checks can fail

// The comparison that every gradient check uses rejects a slightly wrong
// gradient: one element off by 0.1% of the largest, and the RMSNorm gradient
// without its rstd^3 term (as if rstd were a constant).
TEST(GradientCheck, RejectsWrongGradients) {
  std::mt19937 rng(12);
  const int64_t n = 16;
  const auto x = random_floats(n, rng, 1.0), w = random_floats(n, rng, 1.0), dout = random_floats(n, rng, 1.0);
  const Vec wd = to_double(w), doutd = to_double(dout);
  const Vec gx =
      test::central_differences([&](const Vec& xv) { return test::dot(doutd, rmsnorm_ref(xv, wd)); }, to_double(x));
  std::vector<float> out(n), dx(n, 0.0f);
  const float rstd = ops::rmsnorm(out.data(), x.data(), w.data(), n, kNormEps);
  ops::rmsnorm_backward(dx.data(), nullptr, dout.data(), x.data(), w.data(), rstd, n);
  const double ka = (n + 8) * kEpsF32, rtol = 8 * kEpsF32;
  EXPECT_TRUE(test::grad_close("meta", gx, to_double(dx), ka, rtol, false));
  auto perturbed = dx;
  perturbed[5] += float(1e-3 * test::max_abs(gx));
  EXPECT_FALSE(test::grad_close("meta", gx, to_double(perturbed), ka, rtol, false));
  std::vector<float> no_r3(n);
  for (int64_t i = 0; i < n; ++i) no_r3[i] = rstd * w[i] * dout[i];
  EXPECT_FALSE(test::grad_close("meta", gx, to_double(no_r3), ka, rtol, false));
  auto with_nan = dx;
  with_nan[0] = kNaN;
  EXPECT_FALSE(test::grad_close("meta", gx, to_double(with_nan), ka, rtol, false));
}

// The harness's generic checks fail an op that breaks its contract: y += 2 x
// with the backward dx += 2 dy, correct, then with one flaw at a time.
enum class Flaw { None, Overwrites, WritesPadding, ReadsPadding, ChangesInput, NaN, GradientOverwrites, WrongGradient };

class FlawedCase : public OpCase {
 public:
  FlawedCase(Flaw flaw, std::mt19937& rng) : flaw_(flaw) {
    where = "flaw " + std::to_string(int(flaw));
    check_backward = true;
    Tensor& x = input(test::matrix("x", 2, 5, 7), random_floats(10, rng, 1.0));
    x.grad = true, x.mode = Mode::Accumulate;
    Tensor y = test::matrix("y", 2, 5, 6);
    y.mode = Mode::Accumulate;
    out.push_back(y);
  }
  void forward() override {
    float* y = out[0].data();
    const float* x = in[0].data();
    for (int64_t r = 0; r < 2; ++r)
      for (int64_t c = 0; c < 5; ++c) {
        const float v = 2 * x[r * 7 + c];
        y[r * 6 + c] = flaw_ == Flaw::Overwrites ? v : y[r * 6 + c] + v;
      }
    if (flaw_ == Flaw::WritesPadding) y[5] = 0;
    if (flaw_ == Flaw::ReadsPadding) y[0] += x[5];
    if (flaw_ == Flaw::ChangesInput) in[0].data()[3] += 1;
    if (flaw_ == Flaw::NaN) y[7] = kNaN;
  }
  std::vector<Vec> reference(const std::vector<Vec>& x) const override {
    Vec y(10);
    for (int i = 0; i < 10; ++i) y[i] = prefill[0][i] + 2 * x[0][i];
    return {y};
  }
  // Two roundings of O(|y|).
  Vec tolerance(size_t, const Vec& want) const override {
    return test::tolerances(want, 1e-30, 2 * kEpsF32 * (1 + test::max_abs(want)));
  }
  void backward() override {
    float* dx = grad[0].data();
    for (int64_t r = 0; r < 2; ++r)
      for (int64_t c = 0; c < 5; ++c) {
        const float g = (flaw_ == Flaw::WrongGradient && r == 1 && c == 4 ? 2.01f : 2.0f) * dout_t[0].data()[r * 6 + c];
        dx[r * 7 + c] = flaw_ == Flaw::GradientOverwrites ? g : dx[r * 7 + c] + g;
      }
  }
  Vec gradient_tolerance(size_t, const Vec& want) const override {
    return test::grad_tolerances(want, 4 * kEpsF32, 4 * kEpsF32);
  }

 private:
  Flaw flaw_;
};

// The failures the harness reports on one case, intercepted.
int harness_failures(OpCase& c, std::mt19937& rng) {
  ::testing::TestPartResultArray results;
  {
    ::testing::ScopedFakeTestPartResultReporter intercept(
        ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &results);
    test::run_op_case("meta", c, rng);
  }
  return results.size();
}

TEST(OpHarnessChecks, FailAnOpThatBreaksItsContract) {
  std::mt19937 rng(13);
  FlawedCase good(Flaw::None, rng);
  EXPECT_EQ(harness_failures(good, rng), 0);
  for (Flaw flaw : {Flaw::Overwrites, Flaw::WritesPadding, Flaw::ReadsPadding, Flaw::ChangesInput, Flaw::NaN,
                    Flaw::GradientOverwrites, Flaw::WrongGradient}) {
    FlawedCase bad(flaw, rng);
    EXPECT_GE(harness_failures(bad, rng), 1) << "flaw " << int(flaw);
  }
  std::erase_if(test::worst(), [](const auto& entry) { return entry.first.rfind("meta ", 0) == 0; });
}

}  // namespace
}  // namespace flora
