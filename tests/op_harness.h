// The op test harness, after ggml's test-backend-ops: every op of ops/ops.h and
// ops/backward.h is one OpCase class (tests/test_ops.cpp) that states once its
// shapes, how its inputs are drawn, its forward in double, its tolerances and,
// when it has one, its backward. run_op_case checks every case the same way:
//   - the forward against the double reference within the op's tolerance, per
//     element, through test::element_error (a NaN or a stray infinity fails);
//   - inputs carry NaN in their padding (a read of it poisons the result) and
//     must be left unchanged, bit for bit;
//   - outputs and gradients keep their padding (nothing written outside the
//     op's rows, columns or strides);
//   - what the op's contract says is += starts pre-filled with random values
//     and must come back as prefill + result; what it overwrites starts NaN;
//   - the backward against central finite differences of the reference of
//     L = sum(dout * out), with respect to every input that has a gradient;
//   - then the op's own properties (OpCase::also).
// The differences are taken in double, so they are exact to ~1e-9 of the
// gradient's size and the tolerances only have to cover the f32 rounding of
// the code under test. A wrong formula (a missing term, a wrong sign or index)
// misses by O(|want|), orders of magnitude above them; GradientCheck in
// tests/test_ops.cpp checks that. The worst error of each check, as a fraction
// of its tolerance, is printed at the end of the run (ReportWorst).
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "compare.h"
#include "ops/ops.h"

namespace flora::test {

using Vec = std::vector<double>;

constexpr double kEpsF32 = 5.96e-8;  // 2^-24, unit round-off of f32
inline const float kNaN = std::numeric_limits<float>::quiet_NaN();

inline std::vector<float> random_floats(size_t n, std::mt19937& rng, double scale) {
  std::normal_distribution<double> nd(0.0, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = float(nd(rng));
  return v;
}
inline Vec to_double(const std::vector<float>& v) { return Vec(v.begin(), v.end()); }
inline std::vector<float> to_float(const Vec& v) { return std::vector<float>(v.begin(), v.end()); }
inline double max_abs(const Vec& v) { return max_magnitude(v.data(), v.size()); }
inline double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}
inline Vec plus(const Vec& a, const Vec& b) {
  Vec c(a.size());
  for (size_t i = 0; i < a.size(); ++i) c[i] = a[i] + b[i];
  return c;
}

// Same bytes (NaN padding compares equal to itself; -0 and 0 differ). An
// empty pair is equal without calling memcmp, which may not see the null
// data() of an empty vector.
template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

// ---- comparisons, with the worst error of each named check kept for the report

struct Worst {
  double abs_err = 0, used = 0;  // the largest |got - want| and fraction of the tolerance
};
inline std::map<std::string, Worst>& worst() {
  static std::map<std::string, Worst> m;
  return m;
}
class ReportWorst : public ::testing::Environment {
 public:
  void TearDown() override {
    std::printf("worst error of each check (absolute, and as a fraction of its tolerance):\n");
    for (const auto& [name, w] : worst()) std::printf("  %-34s %10.3g  %6.3f\n", name.c_str(), w.abs_err, w.used);
  }
};

// Passes when |got[i] - want[i]| <= tol[i] for every i (a NaN fails).
inline ::testing::AssertionResult within(const std::string& what, const Vec& want, const Vec& got, const Vec& tols,
                                         bool record = true) {
  if (got.size() != want.size() || tols.size() != want.size())
    return ::testing::AssertionFailure() << what << ": " << got.size() << " values, " << want.size() << " expected, "
                                         << tols.size() << " tolerances";
  Worst w;
  int64_t bad = -1;
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = element_error(got[i], want[i]), tol = tols[i];
    if (!(err <= tol) || !std::isfinite(tol)) {  // an infinite tolerance would accept a NaN
      if (bad < 0) bad = int64_t(i);
      w.used = std::max(w.used, std::isfinite(tol) ? err / tol : INFINITY);
    } else if (err > 0) {
      w.used = std::max(w.used, err / tol);
    }
    w.abs_err = std::max(w.abs_err, err);
  }
  if (record) {
    Worst& r = worst()[what];
    r.abs_err = std::max(r.abs_err, w.abs_err);
    r.used = std::max(r.used, w.used);
  }
  if (bad < 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << "[" << bad << "] = " << got[bad] << ", expected " << want[bad]
                                       << " (tolerance " << tols[bad] << "; worst " << w.used << " of tolerance)";
}
// |got - want| <= atol + rtol |want| per element.
inline Vec tolerances(const Vec& want, double atol, double rtol) {
  Vec t(want.size());
  for (size_t i = 0; i < want.size(); ++i) t[i] = atol + rtol * std::fabs(want[i]);
  return t;
}
inline ::testing::AssertionResult all_close(const std::string& what, const Vec& want, const Vec& got, double atol,
                                            double rtol, bool record = true) {
  return within(what, want, got, tolerances(want, atol, rtol), record);
}
// For gradients: atol is `ka` times the largest |want| (the gradient's own
// size: an f32 sum of m terms is off by at most ~m eps sum|terms|, and for
// random inputs sum|terms| is within a small factor of the largest element).
inline Vec grad_tolerances(const Vec& want, double ka, double rtol) {
  return tolerances(want, ka * max_abs(want) + 1e-300, rtol);
}
inline ::testing::AssertionResult grad_close(const std::string& what, const Vec& want, const Vec& got, double ka,
                                             double rtol, bool record = true) {
  return within(what, want, got, grad_tolerances(want, ka, rtol), record);
}

// d f / d x_i for every i by central differences, in double. The step
// h = 1e-6 max(1, |x_i|) balances truncation (h^2 f''' / 6 ~ 1e-12 relative
// here) against cancellation (1e-16 |f| / h ~ 1e-10 |f|): the result is
// exact to ~1e-9 of the gradient, far below every f32 tolerance.
inline Vec central_differences(const std::function<double(const Vec&)>& f, Vec x) {
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double xi = x[i], h = 1e-6 * std::max(1.0, std::fabs(xi));
    x[i] = xi + h;
    const double fp = f(x);
    x[i] = xi - h;
    const double fm = f(x);
    x[i] = xi;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

// ---- the tensors of an op

// Whether an output (or an input's gradient) is written (=) or added to (+=).
enum class Mode { Overwrite, Accumulate };

// An op's (rows, cols) view inside a buffer: rows `ld` floats apart, the view
// starting `offset` floats in, `tail` floats after its last row. Everything
// outside the view is padding. A scalar is a value the op returns (in double:
// the losses are double) instead of writing it.
struct Tensor {
  std::string name;
  int64_t rows = 1, cols = 1, ld = 1, offset = 0, tail = 0;
  bool scalar = false;
  // Inputs: whether the backward gives their gradient, and how (its contract).
  // Outputs: how the forward writes them, and whether they enter L.
  bool grad = false, in_loss = true;
  Mode mode = Mode::Overwrite;
  std::vector<float> buf;
  double value = 0;

  float* data() { return buf.data() + offset; }
  const float* data() const { return buf.data() + offset; }
  size_t size() const { return size_t(rows * cols); }
  // The same shape, a new buffer: `pad` everywhere, `view` (dense) in the view.
  Tensor like(const std::string& n, float pad, const std::vector<float>& view) const {
    Tensor t = *this;
    t.name = n;
    t.value = view.empty() ? 0.0 : view[0];
    if (scalar) return t;
    t.buf.assign(size_t(offset + rows * ld + tail), pad);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) t.buf[offset + r * ld + c] = view[r * cols + c];
    return t;
  }
  Vec values() const {
    if (scalar) return {value};
    Vec d(size());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) d[r * cols + c] = buf[offset + r * ld + c];
    return d;
  }
  bool in_view(size_t i) const {
    const int64_t j = int64_t(i) - offset;
    return j >= 0 && j / ld < rows && j % ld < cols;
  }
  bool padding_is(float pad) const {
    for (size_t i = 0; i < buf.size(); ++i)
      if (!in_view(i) && !(buf[i] == pad || (std::isnan(pad) && std::isnan(buf[i])))) return false;
    return true;
  }
};

// A tensor of (rows, cols) in rows of ld floats (ld > cols: a stride beyond the row).
inline Tensor matrix(const std::string& name, int64_t rows, int64_t cols, int64_t ld, int64_t offset = 0,
                     int64_t tail = 0) {
  Tensor t;
  t.name = name;
  t.rows = rows, t.cols = cols, t.ld = ld, t.offset = offset, t.tail = tail;
  return t;
}
inline Tensor scalar(const std::string& name) {
  Tensor t;
  t.name = name;
  t.scalar = true;
  return t;
}

// ---- an op's case: what it states, what the harness fills in

class OpCase {
 public:
  virtual ~OpCase() = default;

  // Stated by the op's constructor.
  std::string where;            // the shape and the draw, for messages
  std::vector<Tensor> in;       // inputs, their values in place (padding NaN): input(...)
  std::vector<Tensor> out;      // outputs: shape and contract; the harness makes the buffers
  bool check_backward = false;  // this case's backward is checked against finite differences
  // The loss's weight of each output (for the outputs in L); the harness draws
  // N(0, 1) values where it is left empty.
  std::vector<Vec> dout;
  // Scale of the random prefill of an accumulated gradient: 0 is the
  // gradient's own size (what it is added to in training).
  double grad_prefill_scale = 0;

  // Filled by the harness.
  std::vector<Vec> prefill;    // each output's values before the forward
  std::vector<Tensor> dout_t;  // dout in each output's shape (padding NaN)
  std::vector<Tensor> grad;    // each input's gradient buffer (empty for inputs without one)
  std::vector<Vec> grad_prefill;

  // The op under test, in f32: reads `in`, writes `out`.
  virtual void forward() = 0;
  // Every output from every input's values, in double (the prefills in `prefill`).
  virtual std::vector<Vec> reference(const std::vector<Vec>& x) const = 0;
  // Per element of output o: the bound on |got - want| (the comment says why).
  virtual Vec tolerance(size_t o, const Vec& want) const = 0;
  // The backward: reads dout_t (and `out`), writes or adds into `grad`.
  virtual void backward() {}
  virtual Vec gradient_tolerance(size_t k, const Vec& want) const { return Vec(want.size(), 0.0); }
  // A closed form of input k's gradient where finite differences are not
  // exact enough to judge the op by (their truncation above its tolerance):
  // the formula is checked against them within analytic_tolerance(), the op
  // against the formula.
  virtual std::optional<Vec> analytic_gradient(size_t) const { return std::nullopt; }
  virtual double analytic_tolerance() const { return 0; }
  // The op's own properties beyond the generic ones.
  virtual void also(std::mt19937&) {}

  std::vector<Vec> input_values() const {
    std::vector<Vec> x;
    for (const Tensor& t : in) x.push_back(t.values());
    return x;
  }
  // Adds input `t` with its dense values; the padding is NaN.
  Tensor& input(const Tensor& t, const std::vector<float>& values) {
    in.push_back(t.like(t.name, kNaN, values));
    return in.back();
  }
};

// What an op is: its name, whether it runs through the SIMD kernels (then it
// is checked on every dispatch target, else on one), the weight formats it
// reads and its cases for a format.
struct Op {
  std::string name;
  bool simd = false;
  std::vector<DType> formats{DType::F32};
  std::function<std::vector<std::unique_ptr<OpCase>>(DType, std::mt19937&)> cases;
};

// Values for a buffer: N(0, scale), or NaN (garbage the op must overwrite).
inline std::vector<float> prefill_values(Mode mode, size_t n, double scale, std::mt19937& rng) {
  return mode == Mode::Accumulate ? random_floats(n, rng, scale) : std::vector<float>(n, kNaN);
}

// The generic checks of one case (the list at the top of this file).
inline void run_op_case(const std::string& op, OpCase& c, std::mt19937& rng) {
  SCOPED_TRACE(op + " " + c.where);
  constexpr float kOutPad = 777.0f, kGradPad = 555.0f;
  const std::vector<Tensor> inputs_before = c.in;
  auto inputs_unchanged = [&] {
    for (size_t k = 0; k < c.in.size(); ++k)
      if (!same_bits(c.in[k].buf, inputs_before[k].buf))
        return ::testing::AssertionFailure() << "input " << c.in[k].name << " changed";
    return ::testing::AssertionSuccess();
  };

  c.prefill.clear();
  for (Tensor& o : c.out) {
    o = o.like(o.name, kOutPad, prefill_values(o.mode, o.size(), 1.0, rng));
    c.prefill.push_back(o.values());
  }
  c.forward();
  EXPECT_TRUE(inputs_unchanged());
  const std::vector<Vec> x = c.input_values();
  const std::vector<Vec> want = c.reference(x);
  ASSERT_EQ(want.size(), c.out.size());
  for (size_t o = 0; o < c.out.size(); ++o) {
    EXPECT_TRUE(within(op + " " + c.out[o].name, want[o], c.out[o].values(), c.tolerance(o, want[o])));
    EXPECT_TRUE(c.out[o].padding_is(kOutPad)) << c.out[o].name << ": written outside its view";
  }

  if (c.check_backward) {
    c.dout.resize(c.out.size());
    c.dout_t.clear();
    for (size_t o = 0; o < c.out.size(); ++o) {
      if (c.out[o].in_loss && c.dout[o].empty()) c.dout[o] = to_double(random_floats(c.out[o].size(), rng, 1.0));
      c.dout_t.push_back(c.out[o].in_loss ? c.out[o].like("d" + c.out[o].name, kNaN, to_float(c.dout[o])) : Tensor{});
    }
    auto loss = [&](std::vector<Vec> xs, size_t k, const Vec& xk) {
      xs[k] = xk;
      const std::vector<Vec> y = c.reference(xs);
      double L = 0;
      for (size_t o = 0; o < c.out.size(); ++o)
        if (c.out[o].in_loss) L += dot(c.dout[o], y[o]);
      return L;
    };
    std::vector<Vec> fd(c.in.size());
    c.grad.assign(c.in.size(), Tensor{});
    c.grad_prefill.assign(c.in.size(), Vec{});
    for (size_t k = 0; k < c.in.size(); ++k) {
      const Tensor& t = c.in[k];
      if (!t.grad) continue;
      fd[k] = central_differences([&](const Vec& xk) { return loss(x, k, xk); }, x[k]);
      const double scale = c.grad_prefill_scale > 0 ? c.grad_prefill_scale : std::max(max_abs(fd[k]), 1e-30);
      c.grad[k] = t.like("d" + t.name, kGradPad, prefill_values(t.mode, t.size(), scale, rng));
      c.grad_prefill[k] = c.grad[k].values();
    }
    const std::vector<Tensor> dout_before = c.dout_t;
    c.backward();
    EXPECT_TRUE(inputs_unchanged()) << "in the backward";
    for (size_t o = 0; o < c.dout_t.size(); ++o)
      EXPECT_TRUE(same_bits(c.dout_t[o].buf, dout_before[o].buf)) << "the backward changed " << c.dout_t[o].name;
    for (size_t k = 0; k < c.in.size(); ++k) {
      if (!c.in[k].grad) continue;
      Vec g = fd[k];
      if (const std::optional<Vec> exact = c.analytic_gradient(k)) {
        EXPECT_TRUE(all_close(op + " formula vs differences", fd[k], *exact, c.analytic_tolerance(), 0));
        g = *exact;
      }
      const Vec want_g = c.in[k].mode == Mode::Accumulate ? plus(c.grad_prefill[k], g) : g;
      const Tensor& d = c.grad[k];
      EXPECT_TRUE(within(op + " " + d.name, want_g, d.values(), c.gradient_tolerance(k, want_g)));
      EXPECT_TRUE(d.padding_is(kGradPad)) << d.name << ": written outside its view";
    }
  }
  c.also(rng);
}

// Forces one SIMD target for a test's duration.
class ForceTarget {
 public:
  explicit ForceTarget(int64_t target) { ops::set_simd_target_for_test(target); }
  ~ForceTarget() { ops::set_simd_target_for_test(0); }
  ForceTarget(const ForceTarget&) = delete;
  ForceTarget& operator=(const ForceTarget&) = delete;
};

}  // namespace flora::test
