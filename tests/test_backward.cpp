// The training ops of ops/backward.h. Each forward is compared with a plain
// double-precision copy of its math written here; each backward with central
// finite differences of that double copy, of L = sum(dout * out) for a random
// dout, with respect to every input and parameter element. The differences are
// taken in double, so they are exact to ~1e-9 of the gradient's size and the
// tolerances below only have to cover the f32 rounding of the code under test.
//
// Tolerances are |got - want| <= atol + rtol |want| per element, with atol
// scaled by the largest |want| of the array (the gradient's own size): an f32
// sum of m terms is off by at most ~m eps sum|terms|, and for these random
// inputs sum|terms| is within a small factor of the largest gradient element.
// A wrong formula (a missing term, a wrong sign or index) misses by O(|want|),
// orders of magnitude above them; the meta-test at the end checks that.
// The worst error of each check, as a fraction of its tolerance, is printed at
// the end of the run.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "model/adapter_exec.h"
#include "ops/backward.h"
#include "ops/ops.h"
#include "util/error.h"
#include "compare.h"

namespace flora {
namespace {

using Vec = std::vector<double>;

constexpr double kEpsF32 = 5.96e-8;  // 2^-24, unit round-off of f32
const float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<float> random_floats(size_t n, std::mt19937& rng, double scale) {
  std::normal_distribution<double> nd(0.0, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = float(nd(rng));
  return v;
}
Vec to_double(const std::vector<float>& v) { return Vec(v.begin(), v.end()); }
double max_abs(const Vec& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

// Worst error seen by each named check: the largest |got - want| and the
// largest fraction of the tolerance it used.
struct Worst {
  double abs_err = 0, used = 0;
};
std::map<std::string, Worst>& worst() {
  static std::map<std::string, Worst> m;
  return m;
}
class ReportWorst : public ::testing::Environment {
 public:
  void TearDown() override {
    std::printf("worst error of each check (absolute, and as a fraction of its tolerance):\n");
    for (const auto& [name, w] : worst()) std::printf("  %-28s %10.3g  %6.3f\n", name.c_str(), w.abs_err, w.used);
  }
};
[[maybe_unused]] ::testing::Environment* const kReport = ::testing::AddGlobalTestEnvironment(new ReportWorst);

// Passes when |got[i] - want[i]| <= tol[i] for every i (a NaN fails).
::testing::AssertionResult within(const std::string& what, const Vec& want, const float* got, const Vec& tols,
                                  bool record = true) {
  Worst w;
  int64_t bad = -1;
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = test::element_error(got[i], want[i]), tol = tols[i];
    if (!(err <= tol)) {
      if (bad < 0) bad = int64_t(i);
      w.used = std::max(w.used, std::isnan(tol) ? INFINITY : err / tol);
    } else {
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
// Passes when |got[i] - want[i]| <= atol + rtol |want[i]| for every i.
::testing::AssertionResult all_close(const std::string& what, const Vec& want, const float* got, double atol,
                                     double rtol, bool record = true) {
  Vec tols(want.size());
  for (size_t i = 0; i < want.size(); ++i) tols[i] = atol + rtol * std::fabs(want[i]);
  return within(what, want, got, tols, record);
}
// For gradients: atol is `ka` times the largest |want|.
::testing::AssertionResult grad_close(const std::string& what, const Vec& want, const float* got, double ka,
                                      double rtol, bool record = true) {
  return all_close(what, want, got, ka * max_abs(want) + 1e-300, rtol, record);
}

// d f / d x_i for every i by central differences, in double. The step
// h = 1e-6 max(1, |x_i|) balances truncation (h^2 f''' / 6 ~ 1e-12 relative
// here) against cancellation (1e-16 |f| / h ~ 1e-10 |f|): the result is
// exact to ~1e-9 of the gradient, far below every f32 tolerance.
Vec central_differences(const std::function<double(const Vec&)>& f, Vec x) {
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

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}
Vec plus(const Vec& a, const Vec& b) {
  Vec c(a.size());
  for (size_t i = 0; i < a.size(); ++i) c[i] = a[i] + b[i];
  return c;
}

// ---------------------------------------------------------------- RMSNorm

constexpr float kNormEps = 1e-5f;

Vec rmsnorm_ref(const Vec& x, const Vec& w) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double r = 1.0 / std::sqrt(ss / double(x.size()) + double(kNormEps));
  Vec out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = x[i] * r * w[i];
  return out;
}

TEST(RmsNorm, ForwardMatchesDoubleAndReturnsRstd) {
  std::mt19937 rng(1);
  for (int64_t n : {1, 7, 16, 33, 100, 2048})
    for (double scale : {0.1, 1.0, 10.0}) {
      const auto x = random_floats(n, rng, scale), w = random_floats(n, rng, 1.0);
      std::vector<float> out(n);
      const float rstd = ops::rmsnorm(out.data(), x.data(), w.data(), n, kNormEps);
      const Vec want = rmsnorm_ref(to_double(x), to_double(w));
      // Within (n + 8) eps |out| of the exact value (the sum of squares, then two products).
      EXPECT_TRUE(all_close("rmsnorm out vs double", want, out.data(), 1e-30, (n + 8) * kEpsF32)) << n;
      double ss = 0;
      for (float v : x) ss += double(v) * v;
      EXPECT_NEAR(rstd, 1.0 / std::sqrt(ss / n + kNormEps), 2 * kEpsF32 / std::sqrt(ss / n + kNormEps)) << n;
    }
}

TEST(RmsNorm, BackwardMatchesFiniteDifferencesAndAccumulates) {
  std::mt19937 rng(2);
  for (int64_t n : {7, 16, 33})
    for (double scale : {0.1, 1.0, 10.0}) {
      const auto x = random_floats(n, rng, scale), w = random_floats(n, rng, 1.0), dout = random_floats(n, rng, 1.0);
      const Vec xd = to_double(x), wd = to_double(w), doutd = to_double(dout);
      const Vec gx = central_differences([&](const Vec& xv) { return dot(doutd, rmsnorm_ref(xv, wd)); }, xd);
      const Vec gw = central_differences([&](const Vec& wv) { return dot(doutd, rmsnorm_ref(xd, wv)); }, wd);
      std::vector<float> out(n);
      const float rstd = ops::rmsnorm(out.data(), x.data(), w.data(), n, kNormEps);
      // Pre-filled buffers: the gradients must be added to them.
      const auto dx0 = random_floats(n, rng, max_abs(gx)), dw0 = random_floats(n, rng, max_abs(gw));
      auto dx = dx0, dw = dw0;
      ops::rmsnorm_backward(dx.data(), dw.data(), dout.data(), x.data(), w.data(), rstd, n);
      // dx_j = r w_j dout_j - x_j r^3/n sum(...): two terms of the gradient's
      // size and an n-term sum, so (n + 8) eps relative to the largest element.
      const double ka = (n + 8) * kEpsF32, rtol = 8 * kEpsF32;
      EXPECT_TRUE(grad_close("rmsnorm dx", plus(to_double(dx0), gx), dx.data(), ka, rtol)) << n << " " << scale;
      EXPECT_TRUE(grad_close("rmsnorm dw", plus(to_double(dw0), gw), dw.data(), ka, rtol)) << n << " " << scale;
      // A frozen norm (dw null) gets the same dx.
      auto dx_frozen = dx0;
      ops::rmsnorm_backward(dx_frozen.data(), nullptr, dout.data(), x.data(), w.data(), rstd, n);
      EXPECT_EQ(dx_frozen, dx);
    }
}

// ---------------------------------------------------------------- RoPE

struct Angles {
  std::vector<float> cos, sin;
};
Angles random_angles(int64_t half, std::mt19937& rng, double position) {
  Angles a;
  for (int64_t j = 0; j < half; ++j) {  // Llama's frequencies at a position
    const double theta = position * std::pow(500000.0, -2.0 * j / (2.0 * half));
    a.cos.push_back(float(std::cos(theta)));
    a.sin.push_back(float(std::sin(theta)));
  }
  return a;
}
// The rotation of Forward::rope_and_cache: v[j] = a cos - b sin, v[j + half] = b cos + a sin.
Vec rope_ref(const Vec& v, const Angles& a) {
  const size_t half = v.size() / 2;
  Vec r(v.size());
  for (size_t j = 0; j < half; ++j) {
    r[j] = v[j] * a.cos[j] - v[j + half] * a.sin[j];
    r[j + half] = v[j + half] * a.cos[j] + v[j] * a.sin[j];
  }
  return r;
}

TEST(Rope, ForwardAndBackwardMatchTheRotation) {
  std::mt19937 rng(3);
  for (int64_t hd : {2, 4, 6, 8, 64})
    for (double position : {0.0, 1.0, 7.0, 300.0})
      for (double scale : {0.1, 1.0, 10.0}) {
        const Angles a = random_angles(hd / 2, rng, position);
        const auto v = random_floats(hd, rng, scale), dout = random_floats(hd, rng, 1.0);
        auto rotated = v;
        ops::rope_forward(rotated.data(), a.cos.data(), a.sin.data(), hd);
        // Two products and a sum per element: 3 eps of |a| + |b| <= 2 max|v|.
        const double vmax = max_abs(to_double(v));
        EXPECT_TRUE(all_close("rope forward", rope_ref(to_double(v), a), rotated.data(), 6 * kEpsF32 * vmax, 0));
        const Vec doutd = to_double(dout);
        const Vec g = central_differences([&](const Vec& x) { return dot(doutd, rope_ref(x, a)); }, to_double(v));
        auto dv = dout;  // in place: the gradient of the output becomes that of the input
        ops::rope_backward(dv.data(), a.cos.data(), a.sin.data(), hd);
        // The same 3 eps (|da| + |db|); a rotation keeps each pair's norm, so
        // |da| + |db| <= 2 sqrt(2) max|g|.
        EXPECT_TRUE(grad_close("rope dv", g, dv.data(), 9 * kEpsF32, 0)) << hd << " " << position;
        // The rotation is orthogonal (cos^2 + sin^2 = 1 up to 2 eps in f32): backward undoes forward.
        ops::rope_backward(rotated.data(), a.cos.data(), a.sin.data(), hd);
        EXPECT_TRUE(all_close("rope backward(forward(v))", to_double(v), rotated.data(), 16 * kEpsF32 * vmax, 0));
      }
}

// ---------------------------------------------------------------- SwiGLU

double silu_ref(double g) { return g / (1.0 + std::exp(-g)); }

TEST(SwiGlu, BackwardMatchesFiniteDifferencesAndOverwrites) {
  std::mt19937 rng(4);
  for (int64_t n : {7, 33})
    for (double scale : {0.1, 1.0, 10.0}) {
      const auto g = random_floats(n, rng, scale), u = random_floats(n, rng, 1.0), dh = random_floats(n, rng, 1.0);
      const Vec gd = to_double(g), ud = to_double(u), dhd = to_double(dh);
      auto h_ref = [](const Vec& gv, const Vec& uv) {
        Vec h(gv.size());
        for (size_t i = 0; i < gv.size(); ++i) h[i] = silu_ref(gv[i]) * uv[i];
        return h;
      };
      std::vector<float> h(n);
      ops::swiglu_forward(h.data(), g.data(), u.data(), n);
      EXPECT_TRUE(all_close("swiglu h", h_ref(gd, ud), h.data(), 1e-30, 6 * kEpsF32));
      const Vec want_g = central_differences([&](const Vec& x) { return dot(dhd, h_ref(x, ud)); }, gd);
      const Vec want_u = central_differences([&](const Vec& x) { return dot(dhd, h_ref(gd, x)); }, ud);
      std::vector<float> dg(n, 123.0f), du(n, kNaN);  // garbage: both are overwritten
      ops::swiglu_backward(dg.data(), du.data(), dh.data(), g.data(), u.data(), n);
      // Elementwise: an exp, a division and a few products, each within a few
      // eps; atol covers silu'(g) near its zero at g ~ -1.28 (cancellation in 1 + g (1 - s)).
      EXPECT_TRUE(grad_close("swiglu dg", want_g, dg.data(), 8 * kEpsF32, 16 * kEpsF32)) << n << " " << scale;
      EXPECT_TRUE(grad_close("swiglu du", want_u, du.data(), 8 * kEpsF32, 16 * kEpsF32)) << n << " " << scale;
    }
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

// ---------------------------------------------------------------- phi'

double phi_ref(Nonlinearity n, double z) {
  switch (n) {
    case Nonlinearity::ReLU:
      return z > 0 ? z : 0;
    case Nonlinearity::GELU:
      return 0.5 * z * (1 + std::erf(z / std::sqrt(2.0)));
    case Nonlinearity::SiLU:
      return silu_ref(z);
    case Nonlinearity::Identity:
      break;
  }
  return z;
}

TEST(Nonlinearity, DerivativeMatchesFiniteDifferences) {
  std::mt19937 rng(5);
  std::vector<float> zs;
  for (double z = -8.013; z < 8; z += 0.137) zs.push_back(float(z));  // never within a step of ReLU's kink
  for (double scale : {0.1, 1.0, 10.0})
    for (float z : random_floats(20, rng, scale))
      if (std::fabs(z) > 1e-4) zs.push_back(z);
  for (Nonlinearity n : {Nonlinearity::Identity, Nonlinearity::ReLU, Nonlinearity::GELU, Nonlinearity::SiLU}) {
    const char* names[] = {"identity", "relu", "gelu", "silu"};
    const std::string name = std::string("phi' ") + names[int(n)];
    Vec want;
    std::vector<float> got, phi;
    Vec phi_want;
    for (float z : zs) {
      want.push_back(central_differences([&](const Vec& x) { return phi_ref(n, x[0]); }, Vec{z})[0]);
      got.push_back(nonlinearity_derivative(n, z));
      phi.push_back(apply_nonlinearity(n, z));
      phi_want.push_back(phi_ref(n, z));
    }
    // phi' is O(1) (|GELU'| <= 1.13, |SiLU'| <= 1.1): a few float ops of O(1)
    // terms (erf, exp), each within 2 eps, plus z phi(z) with |z| <= 8 in GELU.
    EXPECT_TRUE(all_close(name, want, got.data(), 32 * kEpsF32, 0));
    // The derivative belongs to the phi that the forward pass actually applies.
    // (GELU: 0.5 z (1 + erf) carries |z| eps of absolute error where 1 + erf cancels, |z| <= 40 here.)
    EXPECT_TRUE(all_close("phi vs apply_nonlinearity", phi_want, phi.data(), 64 * kEpsF32, 8 * kEpsF32));
  }
  EXPECT_EQ(nonlinearity_derivative(Nonlinearity::ReLU, 0.0f), 0.0f);
  EXPECT_EQ(nonlinearity_derivative(Nonlinearity::ReLU, -0.0f), 0.0f);
  EXPECT_EQ(nonlinearity_derivative(Nonlinearity::ReLU, 1e-30f), 1.0f);
  EXPECT_EQ(nonlinearity_derivative(Nonlinearity::Identity, 0.0f), 1.0f);
  EXPECT_EQ(nonlinearity_derivative(Nonlinearity::Identity, -1e30f), 1.0f);
  EXPECT_NEAR(nonlinearity_derivative(Nonlinearity::GELU, 0.0f), 0.5f, 1e-7);
  EXPECT_NEAR(nonlinearity_derivative(Nonlinearity::SiLU, 0.0f), 0.5f, 1e-7);
  for (float z : {-1000.0f, -100.0f, 100.0f, 1000.0f}) {  // saturated tails, no NaN
    EXPECT_NEAR(nonlinearity_derivative(Nonlinearity::GELU, z), z > 0 ? 1.0f : 0.0f, 1e-6) << z;
    EXPECT_NEAR(nonlinearity_derivative(Nonlinearity::SiLU, z), z > 0 ? 1.0f : 0.0f, 1e-6) << z;
  }
}

// ---------------------------------------------------------------- attention

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

// A (T, hd) head inside a buffer of row stride ld, the padding NaN so that a
// read of it poisons the result.
struct Strided {
  std::vector<float> buf;
  int64_t T, hd, ld;
  Strided(const std::vector<float>& dense, int64_t T_, int64_t hd_, int64_t ld_, float pad = kNaN)
      : buf(T_ * ld_, pad), T(T_), hd(hd_), ld(ld_) {
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < hd; ++c) buf[t * ld + c] = dense[t * hd + c];
  }
  std::vector<float> dense() const {
    std::vector<float> d(T * hd);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < hd; ++c) d[t * hd + c] = buf[t * ld + c];
    return d;
  }
  bool padding_is(float pad) const {
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = hd; c < ld; ++c)
        if (!(buf[t * ld + c] == pad || (std::isnan(pad) && std::isnan(buf[t * ld + c])))) return false;
    return true;
  }
  float* data() { return buf.data(); }
  const float* data() const { return buf.data(); }
};

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

struct Shape {
  int64_t T, hd;
};

TEST(Attention, ForwardMatchesNaiveLoop) {
  std::mt19937 rng(6);
  for (Shape sh : {Shape{1, 4}, Shape{2, 4}, Shape{5, 6}, Shape{9, 8}, Shape{33, 8}, Shape{70, 16}, Shape{130, 64}})
    for (double scale : {0.1, 1.0, 10.0}) {
      const int64_t T = sh.T, hd = sh.hd, ld_q = hd + 3, ld_kv = hd + 1, ld_out = hd + 2;
      const auto q = random_floats(T * hd, rng, scale), k = random_floats(T * hd, rng, scale),
                 v = random_floats(T * hd, rng, scale);
      const Strided qs(q, T, hd, ld_q), ks(k, T, hd, ld_kv), vs(v, T, hd, ld_kv);
      Strided out(std::vector<float>(T * hd, kNaN), T, hd, ld_out, 777.0f);  // overwritten
      std::vector<float> P(T * T, kNaN);
      ops::attention_block(out.data(), ld_out, P.data(), T, qs.data(), ld_q, T, ks.data(), vs.data(), ld_kv, 0, hd);
      const AttentionRef want = attention_ref(to_double(q), to_double(k), to_double(v), T, hd);
      const double tol = attention_tol(T, hd, want.max_score);
      const std::string where =
          "T=" + std::to_string(T) + " hd=" + std::to_string(hd) + " scale=" + std::to_string(scale);
      EXPECT_TRUE(all_close("attention P", want.P, P.data(), tol, 0)) << where;
      EXPECT_TRUE(all_close("attention out", want.out, out.dense().data(), tol * max_abs(to_double(v)), 0)) << where;
      EXPECT_TRUE(out.padding_is(777.0f)) << "wrote outside the head: " << where;
      for (int64_t i = 0; i < T; ++i)
        for (int64_t j = i + 1; j < T; ++j) ASSERT_EQ(P[i * T + j], 0.0f) << "above the diagonal " << i << "," << j;
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
  return dot(dout, attention_ref(q, k, v, T, hd).out);
}

TEST(Attention, BackwardMatchesFiniteDifferencesAndAccumulates) {
  std::mt19937 rng(7);
  for (Shape sh : {Shape{1, 4}, Shape{2, 4}, Shape{4, 5}, Shape{9, 8}, Shape{37, 4}})
    for (double scale : {0.1, 1.0, 10.0}) {
      const int64_t T = sh.T, hd = sh.hd, ld_q = hd + 3, ld_kv = hd + 1, ld_out = hd + 2, ld_dout = hd + 5;
      const auto q = random_floats(T * hd, rng, scale), k = random_floats(T * hd, rng, scale),
                 v = random_floats(T * hd, rng, scale), dout = random_floats(T * hd, rng, 1.0);
      const Vec qd = to_double(q), kd = to_double(k), vd = to_double(v), doutd = to_double(dout);
      const Vec gq = central_differences([&](const Vec& x) { return attention_loss(x, kd, vd, doutd, T, hd); }, qd);
      const Vec gk = central_differences([&](const Vec& x) { return attention_loss(qd, x, vd, doutd, T, hd); }, kd);
      const Vec gv = central_differences([&](const Vec& x) { return attention_loss(qd, kd, x, doutd, T, hd); }, vd);

      const Strided qs(q, T, hd, ld_q), ks(k, T, hd, ld_kv), vs(v, T, hd, ld_kv), douts(dout, T, hd, ld_dout);
      Strided out(std::vector<float>(T * hd, 0.0f), T, hd, ld_out, 0.0f);
      std::vector<float> P(T * T), scratch(ops::attention_scratch_floats(T, hd), kNaN);
      ops::attention_block(out.data(), ld_out, P.data(), T, qs.data(), ld_q, T, ks.data(), vs.data(), ld_kv, 0, hd);
      // Pre-filled gradients (of the gradients' size): the backward adds to them.
      const auto dq0 = random_floats(T * hd, rng, max_abs(gq)), dk0 = random_floats(T * hd, rng, max_abs(gk)),
                 dv0 = random_floats(T * hd, rng, max_abs(gv));
      Strided dq(dq0, T, hd, ld_q, 555.0f), dk(dk0, T, hd, ld_kv, 555.0f), dv(dv0, T, hd, ld_kv, 555.0f);
      std::fill(scratch.begin(), scratch.end(), kNaN);
      ops::attention_backward(dq.data(), dk.data(), dv.data(), douts.data(), ld_dout, P.data(), qs.data(), ld_q,
                              ks.data(), vs.data(), ld_kv, T, hd, scratch.data());
      const double tol = 4 * attention_tol(T, hd, attention_ref(qd, kd, vd, T, hd).max_score);
      const AttentionMagnitudes mag = attention_magnitudes(qd, kd, vd, doutd, T, hd);
      const std::string where =
          "T=" + std::to_string(T) + " hd=" + std::to_string(hd) + " scale=" + std::to_string(scale);
      const Vec want_q = plus(to_double(dq0), gq), want_k = plus(to_double(dk0), gk), want_v = plus(to_double(dv0), gv);
      EXPECT_TRUE(within("attention dq", want_q, dq.dense().data(), scaled_tolerances(mag.dq, want_q, tol))) << where;
      EXPECT_TRUE(within("attention dk", want_k, dk.dense().data(), scaled_tolerances(mag.dk, want_k, tol))) << where;
      EXPECT_TRUE(within("attention dv", want_v, dv.dense().data(), scaled_tolerances(mag.dv, want_v, tol))) << where;
      EXPECT_TRUE(dq.padding_is(555.0f) && dk.padding_is(555.0f) && dv.padding_is(555.0f)) << where;
    }
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
  const Vec gq0 = central_differences([&](const Vec& x) { return loss(x, q1, kd, vd); }, q0);
  const Vec gq1 = central_differences([&](const Vec& x) { return loss(q0, x, kd, vd); }, q1);
  const Vec gk = central_differences([&](const Vec& x) { return loss(q0, q1, x, vd); }, kd);
  const Vec gv = central_differences([&](const Vec& x) { return loss(q0, q1, kd, x); }, vd);

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
  std::vector<float> dq0(T * hd), dq1(T * hd);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < hd; ++c) dq0[t * hd + c] = dq[t * 2 * hd + c], dq1[t * hd + c] = dq[t * 2 * hd + hd + c];
  EXPECT_TRUE(within("attention group dq", gq0, dq0.data(), scaled_tolerances(m0.dq, gq0, tol)));
  EXPECT_TRUE(within("attention group dq", gq1, dq1.data(), scaled_tolerances(m1.dq, gq1, tol)));
  EXPECT_TRUE(within("attention group dk", gk, dk.data(), scaled_tolerances(plus(m0.dk, m1.dk), gk, tol)));
  EXPECT_TRUE(within("attention group dv", gv, dv.data(), scaled_tolerances(plus(m0.dv, m1.dv), gv, tol)));
}

// ---------------------------------------------------------------- cross-entropy

double logsumexp_ref(const Vec& l) {
  double mx = -INFINITY, s = 0;
  for (double x : l) mx = std::max(mx, x);
  for (double x : l) s += std::exp(x - mx);
  return mx + std::log(s);
}

TEST(CrossEntropy, LossAndGradientMatchDouble) {
  std::mt19937 rng(9);
  for (int64_t V : {1, 2, 11, 1000})
    for (double scale : {0.1, 1.0, 10.0, 100.0})
      for (float grad_scale : {1.0f, 1.0f / 7, 0.37f}) {
        auto logits = random_floats(V, rng, scale);
        if (V > 2) logits[V / 2] = float(40 * scale);  // a dominant logit: exp(4000) would overflow without the max
        const int32_t target = int32_t(rng() % V);
        const Vec ld = to_double(logits);
        const double lse = logsumexp_ref(ld), want_loss = lse - ld[target];
        // Each p_i = exp(l_i - max) / sum carries the rounding of l_i - max
        // (eps |l_i - max| relative, through exp), of exp and of the division
        // (a few eps), and the sum the p-weighted mean of those: so the loss is
        // off by ~eps (2 + spread) and p_i by p_i eps (4 + |l_i - max| + spread).
        double mx = -INFINITY, spread = 0;
        for (double x : ld) mx = std::max(mx, x);
        for (double x : ld) spread += std::exp(x - lse) * (mx - x);
        const double tol = 4 * kEpsF32 * (2 + spread);
        EXPECT_NEAR(ops::cross_entropy_forward(logits.data(), V, target), want_loss, tol) << V << " " << scale;
        const auto before = logits;
        EXPECT_NEAR(ops::cross_entropy_forward(logits.data(), V, target), want_loss, tol);
        EXPECT_EQ(logits, before) << "cross_entropy_forward changed the logits";

        // The gradient: grad_scale (softmax - onehot), and the finite
        // differences of the double loss agree with that formula.
        const Vec fd = central_differences([&](const Vec& x) { return logsumexp_ref(x) - x[target]; }, ld);
        Vec want_grad(V);
        for (int64_t i = 0; i < V; ++i) {
          want_grad[i] = grad_scale * (std::exp(ld[i] - logsumexp_ref(ld)) - (i == target ? 1 : 0));
          // (The finite-difference step is 1e-6 |l_i|, up to 4e-3 at scale 100: truncation ~1e-7.)
          ASSERT_NEAR(grad_scale * fd[i], want_grad[i], 1e-6) << i;
        }
        const double loss = ops::cross_entropy_forward_backward(logits.data(), V, target, grad_scale);
        EXPECT_NEAR(loss, want_loss, tol) << V << " " << scale;
        Vec tols(V);
        for (int64_t i = 0; i < V; ++i)
          tols[i] = 4 * kEpsF32 * grad_scale * (std::exp(ld[i] - lse) * (4 + (mx - ld[i]) + spread) + 1);
        EXPECT_TRUE(within("cross-entropy grad", want_grad, logits.data(), tols)) << V << " " << scale;
      }
}

TEST(CrossEntropy, RejectsATargetOutsideTheVocabulary) {
  std::vector<float> logits(5, 0.0f);
  EXPECT_THROW(ops::cross_entropy_forward(logits.data(), 5, 5), Error);
  EXPECT_THROW(ops::cross_entropy_forward_backward(logits.data(), 5, -1, 1.0f), Error);
}

// ---------------------------------------------------------------- repeat-and-add

struct Tiling {
  int64_t n, r;
};

TEST(TileFold, MatchLoopsAndAreTransposes) {
  std::mt19937 rng(10);
  for (Tiling tl :
       {Tiling{12, 4}, Tiling{13, 4}, Tiling{7, 7}, Tiling{5, 8}, Tiling{33, 1}, Tiling{2048, 16}, Tiling{2048, 96}})
    for (float s : {1.0f, -0.5f, 3.0f}) {
      const int64_t n = tl.n, r = tl.r;
      const auto z = random_floats(r, rng, 1.0), dy = random_floats(n, rng, 1.0);
      const auto y0 = random_floats(n, rng, 1.0), dz0 = random_floats(r, rng, 1.0);
      auto y = y0;
      ops::tile_add(y.data(), z.data(), n, r, s);
      Vec want_y(n);
      for (int64_t i = 0; i < n; ++i) want_y[i] = double(y0[i]) + double(s) * z[i % r];
      EXPECT_TRUE(all_close("tile_add", want_y, y.data(), 2 * kEpsF32 * (1 + std::fabs(s)) * 5, 0));
      auto dz = dz0;
      ops::fold_add(dz.data(), dy.data(), n, r, s);
      Vec want_dz(to_double(dz0));
      for (int64_t i = 0; i < n; ++i) want_dz[i % r] += double(s) * dy[i];
      // Each dz[j] sums n / r terms of size ~1: (n / r + 2) eps of that.
      EXPECT_TRUE(all_close("fold_add", want_dz, dz.data(), (n / r + 2) * kEpsF32 * (1 + std::fabs(s)) * 5, 0));
      // Transposes: <fold(dy), z> == <dy, tile(z)>, from zero buffers.
      std::vector<float> tiled(n, 0.0f), folded(r, 0.0f);
      ops::tile_add(tiled.data(), z.data(), n, r, s);
      ops::fold_add(folded.data(), dy.data(), n, r, s);
      double lhs = 0, rhs = 0, mag = 0;
      for (int64_t j = 0; j < r; ++j) lhs += double(folded[j]) * z[j];
      for (int64_t i = 0; i < n; ++i) rhs += double(dy[i]) * tiled[i], mag += std::fabs(double(dy[i]) * tiled[i]);
      EXPECT_NEAR(lhs, rhs, (n / r + 4) * kEpsF32 * mag) << n << " " << r;
    }
}

// tile_add_range over an output chunk [i0, i1) adds exactly what tile_add
// adds there (the same single multiply-add per element), and nothing outside.
TEST(TileFold, RangeIsTheTileOfItsChunk) {
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

// ---------------------------------------------------------------- transpose

TEST(Transpose, WithRowStride) {
  std::mt19937 rng(11);
  for (Shape sh : {Shape{1, 1}, Shape{3, 5}, Shape{33, 70}, Shape{64, 64}, Shape{70, 33}}) {
    const int64_t rows = sh.T, cols = sh.hd, ld = cols + 3;
    const auto in = random_floats(rows * ld, rng, 1.0);
    std::vector<float> out(rows * cols + 4, 777.0f);
    ops::transpose(out.data(), in.data(), rows, cols, ld);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(out[c * rows + r], in[r * ld + c]) << r << "," << c;
    for (int64_t i = rows * cols; i < rows * cols + 4; ++i) ASSERT_EQ(out[i], 777.0f) << "wrote past the end";
  }
}

// ---------------------------------------------------------------- the checks can fail

// The comparison that every gradient test uses rejects a slightly wrong
// gradient: one element off by 0.1% of the largest, and the RMSNorm gradient
// without its rstd^3 term (as if rstd were a constant).
TEST(GradientCheck, RejectsWrongGradients) {
  std::mt19937 rng(12);
  const int64_t n = 16;
  const auto x = random_floats(n, rng, 1.0), w = random_floats(n, rng, 1.0), dout = random_floats(n, rng, 1.0);
  const Vec wd = to_double(w), doutd = to_double(dout);
  const Vec gx = central_differences([&](const Vec& xv) { return dot(doutd, rmsnorm_ref(xv, wd)); }, to_double(x));
  std::vector<float> out(n), dx(n, 0.0f);
  const float rstd = ops::rmsnorm(out.data(), x.data(), w.data(), n, kNormEps);
  ops::rmsnorm_backward(dx.data(), nullptr, dout.data(), x.data(), w.data(), rstd, n);
  const double ka = (n + 8) * kEpsF32, rtol = 8 * kEpsF32;
  EXPECT_TRUE(grad_close("meta", gx, dx.data(), ka, rtol, false));
  auto perturbed = dx;
  perturbed[5] += float(1e-3 * max_abs(gx));
  EXPECT_FALSE(grad_close("meta", gx, perturbed.data(), ka, rtol, false));
  std::vector<float> no_r3(n);
  for (int64_t i = 0; i < n; ++i) no_r3[i] = rstd * w[i] * dout[i];
  EXPECT_FALSE(grad_close("meta", gx, no_r3.data(), ka, rtol, false));
  auto with_nan = dx;
  with_nan[0] = kNaN;
  EXPECT_FALSE(grad_close("meta", gx, with_nan.data(), ka, rtol, false));
}

}  // namespace
}  // namespace flora
