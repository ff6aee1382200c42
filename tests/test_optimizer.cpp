// Optimisers against the PyTorch formulas written out here in double (AdamW as
// torch.optim.AdamW, SGD as torch.optim.SGD without momentum), weight decay per
// slot, gradient clipping as torch.nn.utils.clip_grad_norm_, the Hugging Face
// learning-rate schedules at their boundaries, and the state file.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "scratch_dir.h"
#include "train/optimizer.h"
#include "util/error.h"

using namespace flora;
using namespace flora::train;

namespace {

// torch.optim.AdamW for one tensor, in double: decoupled decay, moments,
// bias corrections, eps added after the square root.
struct RefAdamW {
  double b1, b2, eps, wd;
  std::vector<double> m, v;
  int t = 0;
  void step(std::vector<double>& p, const std::vector<double>& g, double lr, bool decay) {
    ++t;
    if (m.empty()) m.assign(p.size(), 0.0), v.assign(p.size(), 0.0);
    for (size_t i = 0; i < p.size(); ++i) {
      if (decay) p[i] -= lr * wd * p[i];
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      const double m_hat = m[i] / (1 - std::pow(b1, t));
      const double v_hat = v[i] / (1 - std::pow(b2, t));
      p[i] -= lr * m_hat / (std::sqrt(v_hat) + eps);
    }
  }
};

// The gradient of element i at step s (1-based): varied signs and sizes, exact in float.
float grad_at(int s, size_t i, double scale) {
  return static_cast<float>(scale * std::sin(1.0 + 2.0 * static_cast<double>(i) + 0.7 * s));
}

std::vector<double> widen(const std::vector<float>& x) { return {x.begin(), x.end()}; }

void expect_near(const std::vector<float>& got, const std::vector<double>& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << what << " [" << i << "]";
}

// Runs `steps` AdamW steps on two 3-element slots (the first decayed, the second not)
// against the double reference.
void check_adamw(const OptimizerOptions& o, double grad_scale, int steps) {
  std::vector<float> p1 = {0.5f, -1.25f, 2.0f}, g1(3), p2 = {-0.75f, 0.125f, 1.5f}, g2(3);
  Optimizer opt(o, {{"a", p1.data(), g1.data(), 3, true}, {"b", p2.data(), g2.data(), 3, false}});
  RefAdamW r1{o.beta1, o.beta2, o.eps, o.weight_decay, {}, {}}, r2 = r1;
  std::vector<double> q1 = widen(p1), q2 = widen(p2);
  const double lrs[] = {0.1, 0.05, 0.02, 0.08, 0.01, 0.03};
  for (int s = 1; s <= steps; ++s) {
    for (size_t i = 0; i < 3; ++i) g1[i] = grad_at(s, i, grad_scale), g2[i] = grad_at(s, i + 3, grad_scale);
    const double lr = lrs[(s - 1) % 6];
    opt.step(lr);
    r1.step(q1, widen(g1), lr, true);
    r2.step(q2, widen(g2), lr, false);
    EXPECT_EQ(opt.step_count(), s);
    expect_near(p1, q1, 2e-6, "decayed slot, step " + std::to_string(s));
    expect_near(p2, q2, 2e-6, "plain slot, step " + std::to_string(s));
    expect_near(opt.m(0), r1.m, 1e-6 * grad_scale, "m");
    expect_near(opt.v(1), r2.v, 1e-6 * grad_scale * grad_scale, "v");
  }
}

}  // namespace

class OptimizerFile : public ScratchDirTest {};

// ---------------------------------------------------------------- AdamW

TEST(AdamW, FirstStepMovesEachParameterByLrTimesTheSignOfItsGradient) {
  // Step 1: m/(1-b1) = g and sqrt(v/(1-b2)) = |g|, so p -= lr * g / (|g| + eps).
  std::vector<float> p = {1.0f, -2.0f, 3.0f}, g = {0.5f, -4.0f, 0.0f};
  Optimizer opt({}, {{"w", p.data(), g.data(), 3, true}});
  opt.step(0.01);
  EXPECT_NEAR(p[0], 1.0 - 0.01 * 0.5 / (0.5 + 1e-8), 1e-7);
  EXPECT_NEAR(p[1], -2.0 + 0.01 * 4.0 / (4.0 + 1e-8), 1e-7);
  EXPECT_EQ(p[2], 3.0f);                                  // zero gradient, no decay: unchanged
  EXPECT_EQ(g, (std::vector<float>{0.5f, -4.0f, 0.0f}));  // gradients are left alone
}

TEST(AdamW, MatchesTorchFormulasOverSeveralSteps) {
  OptimizerOptions o;
  o.weight_decay = 0.1;
  check_adamw(o, 1.0, 6);
}

TEST(AdamW, EpsIsAddedAfterTheBiasCorrectedSquareRoot) {
  // Small gradients and a large eps make the placement of eps visible (a wrong placement
  // moves the parameters by ~1e-3 here).
  OptimizerOptions o;
  o.eps = 1e-2;
  o.beta1 = 0.8;
  o.beta2 = 0.95;
  o.weight_decay = 0.5;
  check_adamw(o, 1e-2, 6);
}

TEST(AdamW, WeightDecayOnlyOnDecaySlots) {
  // Zero gradients: m = v = 0, the Adam term is 0 / (0 + eps) = 0, so only decay acts.
  std::vector<float> a = {1.0f, -2.0f, 4.0f}, b = {1.0f, -2.0f, 4.0f}, ga(3, 0.0f), gb(3, 0.0f);
  OptimizerOptions o;
  o.weight_decay = 0.1;
  Optimizer opt(o, {{"a", a.data(), ga.data(), 3, true}, {"b", b.data(), gb.data(), 3, false}});
  opt.step(0.5);
  opt.step(0.5);
  const double f = (1 - 0.5 * 0.1) * (1 - 0.5 * 0.1);
  EXPECT_NEAR(a[0], 1.0 * f, 1e-6);
  EXPECT_NEAR(a[1], -2.0 * f, 1e-6);
  EXPECT_NEAR(a[2], 4.0 * f, 1e-6);
  EXPECT_EQ(b, (std::vector<float>{1.0f, -2.0f, 4.0f}));
  // weight_decay 0: no decay even on a decay slot.
  std::vector<float> c = {3.0f}, gc = {0.0f};
  Optimizer plain({}, {{"c", c.data(), gc.data(), 1, true}});
  plain.step(1.0);
  EXPECT_EQ(c[0], 3.0f);
}

// ---------------------------------------------------------------- SGD

TEST(Sgd, MatchesTorchWithL2WeightDecay) {
  OptimizerOptions o;
  o.kind = OptimizerKind::Sgd;
  o.weight_decay = 0.2;
  std::vector<float> p1 = {0.5f, -1.25f, 2.0f}, g1(3), p2 = {-0.75f, 0.125f, 1.5f}, g2(3);
  Optimizer opt(o, {{"a", p1.data(), g1.data(), 3, true}, {"b", p2.data(), g2.data(), 3, false}});
  std::vector<double> q1 = widen(p1), q2 = widen(p2);
  const double lrs[] = {0.1, 0.3, 0.05, 0.2};
  for (int s = 1; s <= 4; ++s) {
    for (size_t i = 0; i < 3; ++i) g1[i] = grad_at(s, i, 1.0), g2[i] = grad_at(s, i + 3, 1.0);
    opt.step(lrs[s - 1]);
    for (size_t i = 0; i < 3; ++i) {
      q1[i] -= lrs[s - 1] * (g1[i] + 0.2 * q1[i]);  // d_p = g + wd * p; p -= lr * d_p
      q2[i] -= lrs[s - 1] * g2[i];
    }
    expect_near(p1, q1, 1e-6, "sgd decayed, step " + std::to_string(s));
    expect_near(p2, q2, 1e-6, "sgd plain, step " + std::to_string(s));
  }
  EXPECT_EQ(opt.step_count(), 4);
  EXPECT_TRUE(opt.m(0).empty());
}

TEST(Optimizer, ZeroGradsAndValidation) {
  std::vector<float> p = {1, 2}, g = {3, 4};
  Optimizer opt({}, {{"p", p.data(), g.data(), 2, true}});
  opt.zero_grads();
  EXPECT_EQ(g, (std::vector<float>{0, 0}));
  EXPECT_EQ(error_of([&] { opt.step(-1); }), "optimizer: expected a learning rate >= 0, found -1");
  EXPECT_EQ(error_of([&] { opt.step(NAN); }), "optimizer: expected a learning rate >= 0, found nan");

  EXPECT_EQ(error_of([&] {
              Optimizer({}, {{"p", p.data(), g.data(), 2, true}, {"p", p.data(), g.data(), 2, true}});
            }),
            "optimizer: parameter 'p': expected unique names, found it twice");
  EXPECT_EQ(error_of([&] {
              Optimizer({}, {{"", p.data(), g.data(), 2, true}});
            }),
            "optimizer: expected a name for every parameter, found an empty one");
  EXPECT_EQ(error_of([&] {
              Optimizer({}, {{"p", p.data(), nullptr, 2, true}});
            }),
            "optimizer: parameter 'p': expected value and gradient buffers, found a null pointer");
  EXPECT_EQ(error_of([&] {
              Optimizer({}, {{"p", p.data(), g.data(), -1, true}});
            }),
            "optimizer: parameter 'p': expected a size >= 0, found -1");
  OptimizerOptions o;
  o.beta2 = 1.0;
  EXPECT_EQ(error_of([&] { Optimizer(o, {}); }), "optimizer: expected betas in [0, 1), found (0.9, 1)");
  o = {};
  o.weight_decay = -0.1;
  EXPECT_EQ(error_of([&] { Optimizer(o, {}); }), "optimizer: expected weight_decay >= 0, found -0.1");
  EXPECT_EQ(parse_optimizer_kind("adamw"), OptimizerKind::AdamW);
  EXPECT_EQ(parse_optimizer_kind("sgd"), OptimizerKind::Sgd);
  EXPECT_EQ(error_of([] { parse_optimizer_kind("adam"); }), "optimizer 'adam': expected adamw or sgd");
}

// ---------------------------------------------------------------- clipping

TEST(Clip, GlobalNormOverSlotsAndTorchSemantics) {
  std::vector<float> v1(2), g1 = {3.0f, 0.0f}, v2(1), g2 = {4.0f};
  const std::vector<ParamSlot> slots = {{"a", v1.data(), g1.data(), 2, true}, {"b", v2.data(), g2.data(), 1, true}};
  EXPECT_DOUBLE_EQ(global_grad_norm(slots), 5.0);

  // Norm below max_norm: coef = 10 / (5 + 1e-6) > 1, untouched.
  EXPECT_DOUBLE_EQ(clip_grad_norm(slots, 10.0), 5.0);
  EXPECT_EQ(g1, (std::vector<float>{3.0f, 0.0f}));
  EXPECT_EQ(g2, (std::vector<float>{4.0f}));
  // max_norm 0: off.
  EXPECT_DOUBLE_EQ(clip_grad_norm(slots, 0.0), 5.0);
  EXPECT_EQ(g2[0], 4.0f);
  // max_norm equal to the norm: coef = 5 / (5 + 1e-6) < 1 still scales (as torch does).
  EXPECT_DOUBLE_EQ(clip_grad_norm(slots, 5.0), 5.0);
  EXPECT_EQ(g2[0], static_cast<float>(4.0f * static_cast<float>(5.0 / (5.0 + 1e-6))));
  EXPECT_LT(g2[0], 4.0f);
  // Clipping to 1: returns the norm before, scales every slot by 1 / (norm + 1e-6).
  g1 = {3.0f, 0.0f};
  g2 = {4.0f};
  EXPECT_DOUBLE_EQ(clip_grad_norm(slots, 1.0), 5.0);
  EXPECT_NEAR(g1[0], 3.0 / (5.0 + 1e-6), 1e-7);
  EXPECT_NEAR(g2[0], 4.0 / (5.0 + 1e-6), 1e-7);
  EXPECT_NEAR(global_grad_norm(slots), 1.0, 1e-6);
  EXPECT_EQ(error_of([&] { clip_grad_norm(slots, -1.0); }),
            "clip_grad_norm: expected max_norm >= 0 (0 = off), found -1");
}

TEST(Clip, NormIsAccumulatedInDouble) {
  // 2^24 + 1 terms of 1: a float running sum would stop at 2^24.
  const int64_t n = (int64_t{1} << 24) + 4;
  std::vector<float> v(n), g(n, 1.0f);
  EXPECT_DOUBLE_EQ(global_grad_norm({{"g", v.data(), g.data(), n, true}}), std::sqrt(static_cast<double>(n)));
}

// ---------------------------------------------------------------- schedules

TEST(Schedule, WarmupThenConstantLinearCosine) {
  const double lr = 1e-3;
  const int64_t W = 10, N = 110;
  for (LrSchedule s : {LrSchedule::Constant, LrSchedule::Linear, LrSchedule::Cosine}) {
    SCOPED_TRACE(lr_schedule_name(s));
    EXPECT_EQ(learning_rate(s, lr, 0, W, N), 0.0);  // the first update of a warmed-up run is at lr 0, as HF
    EXPECT_DOUBLE_EQ(learning_rate(s, lr, 1, W, N), lr * 1 / 10);
    EXPECT_DOUBLE_EQ(learning_rate(s, lr, 5, W, N), lr * 5 / 10);
    EXPECT_DOUBLE_EQ(learning_rate(s, lr, 9, W, N), lr * 9 / 10);
    EXPECT_DOUBLE_EQ(learning_rate(s, lr, W, W, N), lr);  // warmup end: the full rate
    // No warmup: the full rate from step 0.
    EXPECT_DOUBLE_EQ(learning_rate(s, lr, 0, 0, N), lr);
    EXPECT_EQ(parse_lr_schedule(lr_schedule_name(s)), s);
  }
  EXPECT_DOUBLE_EQ(learning_rate(LrSchedule::Constant, lr, N, W, N), lr);
  EXPECT_DOUBLE_EQ(learning_rate(LrSchedule::Constant, lr, 10 * N, W, N), lr);
  // Linear: (N - step) / (N - W).
  EXPECT_DOUBLE_EQ(learning_rate(LrSchedule::Linear, lr, 60, W, N), lr * 0.5);
  EXPECT_DOUBLE_EQ(learning_rate(LrSchedule::Linear, lr, 35, W, N), lr * 75.0 / 100.0);
  EXPECT_DOUBLE_EQ(learning_rate(LrSchedule::Linear, lr, N - 1, W, N), lr * 1.0 / 100.0);
  EXPECT_EQ(learning_rate(LrSchedule::Linear, lr, N, W, N), 0.0);
  EXPECT_EQ(learning_rate(LrSchedule::Linear, lr, N + 5, W, N), 0.0);
  // Cosine: 0.5 (1 + cos(pi progress)), progress = (step - W) / (N - W).
  EXPECT_NEAR(learning_rate(LrSchedule::Cosine, lr, 60, W, N), lr * 0.5, 1e-18);
  EXPECT_NEAR(learning_rate(LrSchedule::Cosine, lr, 35, W, N), lr * 0.5 * (1 + std::cos(std::numbers::pi * 0.25)),
              1e-18);
  EXPECT_NEAR(learning_rate(LrSchedule::Cosine, lr, N - 1, W, N), lr * 0.5 * (1 + std::cos(std::numbers::pi * 0.99)),
              1e-18);
  EXPECT_NEAR(learning_rate(LrSchedule::Cosine, lr, N, W, N), 0.0, 1e-18);
  EXPECT_EQ(learning_rate(LrSchedule::Cosine, lr, N + 50, W, N), 0.0);  // stays at 0 past the end
  // total <= warmup: HF's denominators are max(1, N - W).
  EXPECT_DOUBLE_EQ(learning_rate(LrSchedule::Linear, lr, 5, 5, 5), 0.0);
  EXPECT_DOUBLE_EQ(learning_rate(LrSchedule::Cosine, lr, 5, 5, 5), lr);
  EXPECT_EQ(error_of([] { learning_rate(LrSchedule::Linear, 1, -1, 0, 10); }),
            "learning_rate: expected step, warmup_steps and total_steps >= 0, found -1, 0, 10");
  EXPECT_EQ(error_of([] { parse_lr_schedule("step"); }), "lr schedule 'step': expected constant, linear or cosine");
}

// ---------------------------------------------------------------- state file

TEST_F(OptimizerFile, AdamWStateRoundTripContinuesIdentically) {
  std::vector<float> p1 = {0.5f, -1.25f, 2.0f}, g1(3), p2 = {-0.75f, 0.125f}, g2(2);
  OptimizerOptions o;
  o.weight_decay = 0.01;
  Optimizer a(o, {{"layers.0.A", p1.data(), g1.data(), 3, true}, {"layers.0.B", p2.data(), g2.data(), 2, false}});
  for (int s = 1; s <= 3; ++s) {
    for (size_t i = 0; i < 3; ++i) g1[i] = grad_at(s, i, 1.0);
    for (size_t i = 0; i < 2; ++i) g2[i] = grad_at(s, i + 3, 1.0);
    a.step(0.01);
  }
  const std::string file = path("optimizer.safetensors");
  a.save_state(file);

  {
    const SafetensorsFile f(file);
    EXPECT_EQ(f.metadata().at("optimizer"), "adamw");
    EXPECT_EQ(f.metadata().at("step"), "3");
    ASSERT_EQ(f.tensors().size(), 4u);
    const TensorView* m = f.find("m.layers.0.A");
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->dtype, DType::F32);
    EXPECT_EQ(m->shape, (std::vector<int64_t>{3}));
    ASSERT_NE(f.find("v.layers.0.B"), nullptr);
    EXPECT_EQ(f.find("v.layers.0.B")->shape, (std::vector<int64_t>{2}));
  }

  // A second optimiser over copies of the parameters, loaded from the file, takes the
  // same next step bit for bit.
  std::vector<float> c1 = p1, c2 = p2, h1(3), h2(2);
  Optimizer b(o, {{"layers.0.A", c1.data(), h1.data(), 3, true}, {"layers.0.B", c2.data(), h2.data(), 2, false}});
  b.load_state(file);
  EXPECT_EQ(b.step_count(), 3);
  EXPECT_EQ(b.m(0), a.m(0));
  EXPECT_EQ(b.v(1), a.v(1));
  for (size_t i = 0; i < 3; ++i) g1[i] = h1[i] = grad_at(4, i, 1.0);
  for (size_t i = 0; i < 2; ++i) g2[i] = h2[i] = grad_at(4, i + 3, 1.0);
  a.step(0.02);
  b.step(0.02);
  EXPECT_EQ(c1, p1);
  EXPECT_EQ(c2, p2);
  EXPECT_EQ(b.step_count(), 4);
}

TEST_F(OptimizerFile, SgdStateHoldsTheStepOnly) {
  std::vector<float> p = {1}, g = {1};
  OptimizerOptions o;
  o.kind = OptimizerKind::Sgd;
  Optimizer a(o, {{"p", p.data(), g.data(), 1, true}});
  a.step(0.1);
  a.step(0.1);
  const std::string file = path("sgd.safetensors");
  a.save_state(file);
  EXPECT_TRUE(SafetensorsFile(file).tensors().empty());
  Optimizer b(o, {{"p", p.data(), g.data(), 1, true}});
  b.load_state(file);
  EXPECT_EQ(b.step_count(), 2);
}

TEST_F(OptimizerFile, LoadErrorsNameTheFileAndTensor) {
  std::vector<float> p(3, 1.0f), g(3, 0.5f), q(2, 1.0f), h(2, 0.5f);
  Optimizer a({}, {{"x", p.data(), g.data(), 3, true}, {"y", q.data(), h.data(), 2, true}});
  a.step(0.1);
  const std::string file = path("state.safetensors");
  a.save_state(file);

  // A parameter the file does not hold.
  Optimizer renamed({}, {{"x", p.data(), g.data(), 3, true}, {"z", q.data(), h.data(), 2, true}});
  EXPECT_EQ(error_of([&] { renamed.load_state(file); }),
            file + ": tensor 'm.z': expected it (a parameter of the optimizer), found none");
  EXPECT_EQ(renamed.step_count(), 0);  // nothing changed
  // Another size.
  std::vector<float> big(4), bigg(4);
  Optimizer resized({}, {{"x", big.data(), bigg.data(), 4, true}, {"y", q.data(), h.data(), 2, true}});
  EXPECT_EQ(error_of([&] { resized.load_state(file); }), file + ": tensor 'm.x': expected F32 [4], found F32 [3]");
  // Tensors of a parameter this optimiser does not have.
  Optimizer fewer({}, {{"x", p.data(), g.data(), 3, true}});
  EXPECT_EQ(error_of([&] { fewer.load_state(file); }),
            file + ": tensor 'm.y': expected only the state of this optimizer's parameters, found a tensor of none");
  // Another optimiser kind.
  OptimizerOptions sgd;
  sgd.kind = OptimizerKind::Sgd;
  Optimizer other(sgd, {{"x", p.data(), g.data(), 3, true}, {"y", q.data(), h.data(), 2, true}});
  EXPECT_EQ(error_of([&] { other.load_state(file); }), file + ": expected the state of optimizer sgd, found adamw");

  // Hand-written files: wrong dtype, bad or missing metadata.
  const std::vector<double> m64(3);
  const std::vector<float> v32(3), y32(2);
  const std::string f64 = path("f64.safetensors");
  write_safetensors(f64,
                    {{"m.x", DType::F64, {3}, m64.data()},
                     {"v.x", DType::F32, {3}, v32.data()},
                     {"m.y", DType::F32, {2}, y32.data()},
                     {"v.y", DType::F32, {2}, y32.data()}},
                    {{"optimizer", "adamw"}, {"step", "1"}});
  EXPECT_EQ(error_of([&] { a.load_state(f64); }), f64 + ": tensor 'm.x': expected F32 [3], found F64 [3]");
  for (const std::string bad : {"-1", "x", "1.5", "", " 2"}) {
    const std::string f = path("step.safetensors");
    write_safetensors(f, {}, {{"optimizer", "sgd"}, {"step", bad}});
    Optimizer s(sgd, {});
    EXPECT_EQ(error_of([&] { s.load_state(f); }),
              f + ": __metadata__ key 'step': expected an integer >= 0, found '" + bad + "'");
  }
  const std::string nometa = path("nometa.safetensors");
  write_safetensors(nometa, {});
  EXPECT_EQ(error_of([&] { a.load_state(nometa); }),
            nometa + ": __metadata__: expected key 'optimizer' (an optimizer state file)");
  EXPECT_NE(error_of([&] { a.load_state(path("missing.safetensors")); }).find("missing.safetensors"),
            std::string::npos);
  // Saving into a missing directory fails and names it.
  EXPECT_NE(error_of([&] { a.save_state(path("no/such/dir/state.safetensors")); }).find("does not exist"),
            std::string::npos);
}
