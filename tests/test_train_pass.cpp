// The training pass (model/train_pass.h): its forward against the PyTorch
// twin's logits, its gradients against the twin's autograd gradients for every
// adapter variant and for full fine-tuning (tools/torch_twin.py train-golden),
// against finite differences with dropout on, and its determinism.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "adapters/adapter.h"
#include "adapters/exec.h"
#include "bf16_products.h"
#include "compare.h"
#include "io/safetensors.h"
#include "model/dense_weights.h"
#include "model/forward.h"
#include "model/train_pass.h"
#include "ops/ops.h"
#include "train/optimizer.h"
#include "train/trainer.h"
#include "util/random.h"

namespace flora {
namespace {

const std::string kFixtures = std::string(FLORA_SOURCE_DIR) + "/tests/fixtures/tiny_llama";
const std::vector<std::string> kVariants = {"lora", "ffa", "ffba", "ffba-aorb", "ffba-qg", "ffba-relu", "ffba-gelu"};

std::string test_name(const std::string& s) {
  std::string n = s;
  for (auto& ch : n)
    if (ch == '-') ch = '_';
  return n;
}

std::vector<int64_t> read_i64(const SafetensorsFile& f, const std::string& name) {
  const TensorView* t = f.find(name);
  if (!t) ADD_FAILURE() << f.path() << " has no tensor " << name;
  if (!t) return {};
  std::vector<int64_t> v(t->numel());
  std::memcpy(v.data(), t->data, t->nbytes);
  return v;
}
std::vector<double> read_f64(const SafetensorsFile& f, const std::string& name) {
  const TensorView* t = f.find(name);
  if (!t) ADD_FAILURE() << f.path() << " has no tensor " << name;
  if (!t) return {};
  std::vector<double> v(t->numel());
  for (int64_t i = 0; i < t->numel(); ++i) {
    if (t->dtype == DType::F64) {
      std::memcpy(&v[i], t->data + 8 * i, 8);
    } else {
      float x;
      std::memcpy(&x, t->data + 4 * i, 4);
      v[i] = x;
    }
  }
  return v;
}

// The twin's golden forward (tokens, logits) for the base model or an adapter.
TEST(TrainPass, ForwardMatchesTwinLogits) {
  for (const std::string& variant :
       std::vector<std::string>{"", "lora", "ffa", "ffba", "ffba-aorb", "ffba-qg", "ffba-relu", "ffba-gelu"}) {
    auto model = LlamaModel::load(kFixtures + "/f32");
    const std::string dir = variant.empty() ? kFixtures + "/f32" : kFixtures + "/adapters/" + variant;
    SafetensorsFile golden(dir + "/golden.safetensors");
    std::vector<int32_t> tokens;
    for (int64_t t : read_i64(golden, "tokens")) tokens.push_back(static_cast<int32_t>(t));
    const std::vector<double> want = read_f64(golden, "logits");
    const int64_t T = static_cast<int64_t>(tokens.size()), V = model->config().vocab_size;
    std::unique_ptr<Adapter> adapter, grads;
    if (!variant.empty()) {
      adapter = std::make_unique<Adapter>(Adapter::load(dir, model->config()));
      grads = std::make_unique<Adapter>(adapter->zeros_like());
    }
    ThreadPool pool(2);
    const auto pass_adapter = make_adapter_train_view(adapter.get(), grads.get());
    TrainPass pass(model->config(), pool, weights_view_of(*model), nullptr, pass_adapter ? &*pass_adapter : nullptr, T);
    pass.keep_logits(true);
    std::vector<int32_t> targets(T, -1);
    pass.run(TrainBatch{1, T, tokens.data(), targets.data()}, false, 1.0f);
    EXPECT_LE(test::max_abs_error(pass.logits().data(), want.data(), static_cast<size_t>(T * V)), 1e-4)
        << (variant.empty() ? "base" : variant);
  }
}

// The training forward is the inference forward (one layer function,
// Forward::forward_train): its logits of a batch of two sequences equal, bit
// for bit, each sequence's own inference forward, for the base model and
// every adapter variant in every execution. This rests on the design's row
// guarantee (a row's values depend only on its own sequence, never on the
// rows beside it, how the products split rows or which thread runs them).
TEST(TrainPass, ForwardIsTheInferenceForwardBitForBit) {
  auto model = LlamaModel::load(kFixtures + "/f32");
  const std::vector<int32_t> tokens = {379, 12, 200, 31,  7, 99, 150, 3, 4,  45, 46, 47, 48, 49, 50, 51, 52, 53,
                                       379, 5,  77,  300, 2, 1,  9,   8, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69};
  const int64_t B = 2, T = 18, V = model->config().vocab_size;
  struct Case {
    std::string variant;
    LoraExecution execution;
  };
  std::vector<Case> cases = {
      {"", LoraExecution::Unfused}, {"lora", LoraExecution::Unfused}, {"lora", LoraExecution::PartiallyFused}};
  for (const std::string& v : kVariants)
    if (v != "lora") cases.push_back({v, LoraExecution::Unfused});
  for (const Case& c : cases) {
    const std::string what = c.variant.empty() ? "base" : c.variant + " " + lora_variant_name(c.execution);
    std::unique_ptr<Adapter> adapter, grads;
    std::optional<AdapterTrainView> view;
    if (!c.variant.empty()) {
      adapter = std::make_unique<Adapter>(Adapter::load(kFixtures + "/adapters/" + c.variant, model->config()));
      grads = std::make_unique<Adapter>(adapter->zeros_like());
      view = make_adapter_train_view(*adapter, *grads);
      view->values = make_adapter_exec(*adapter, c.execution);
    }
    ThreadPool pool(2);
    TrainPass pass(model->config(), pool, weights_view_of(*model), nullptr, view ? &*view : nullptr, B * T);
    pass.keep_logits(true);
    std::vector<int32_t> targets(B * T, -1);
    pass.run(TrainBatch{B, T, tokens.data(), targets.data()}, false, 1.0f);
    Forward forward(*model, pool, T, view ? &view->values : nullptr);
    for (int64_t b = 0; b < B; ++b) {
      forward.reset();
      const float* want = forward.forward(tokens.data() + b * T, T, true);
      EXPECT_EQ(0, std::memcmp(want, pass.logits().data() + b * T * V, static_cast<size_t>(T * V) * sizeof(float)))
          << what << " sequence " << b << ": max |diff| "
          << test::max_abs_error(pass.logits().data() + b * T * V, want, static_cast<size_t>(T * V));
    }
  }
}

// One golden case of tools/torch_twin.py train-golden: model, batch, loss, gradients.
struct TwinCase {
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<SafetensorsFile> golden;
  std::vector<int32_t> tokens, targets;
  int64_t B = 0, T = 0, count = 0;

  explicit TwinCase(const std::string& name)
      : TwinCase(kFixtures + "/f32", kFixtures + "/train/" + name + "/golden.safetensors") {}
  TwinCase(const std::string& model_dir, const std::string& golden_path) {
    model = LlamaModel::load(model_dir);
    golden = std::make_unique<SafetensorsFile>(golden_path);
    const TensorView* tv = golden->find("tokens");
    if (!tv) throw Error("no tokens in golden");
    B = tv->shape[0], T = tv->shape[1];
    const std::vector<int64_t> tok = read_i64(*golden, "tokens"), lab = read_i64(*golden, "labels");
    // Hugging Face shifts inside the model: position t predicts label t + 1.
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) {
        tokens.push_back(static_cast<int32_t>(tok[b * T + t]));
        const int64_t next = t + 1 < T ? lab[b * T + t + 1] : -100;
        targets.push_back(next == -100 ? -1 : static_cast<int32_t>(next));
        count += next != -100;
      }
  }
  TrainBatch batch() const { return TrainBatch{B, T, tokens.data(), targets.data()}; }
};

// Worst |got - want| / (atol + rtol |want|) over a tensor, atol relative to
// the tensor's largest |want|: <= 1 passes.
double worst_ratio(const float* got, const std::vector<double>& want, double atol, double rtol) {
  const double largest = test::max_magnitude(want.data(), want.size());
  return test::max_error_ratio(got, want.data(), want.size(), atol * largest, rtol);
}

// Gradients in f32 against the twin's float64 autograd: the loss is ~9 and
// gradients up to ~2. The twin run in float32 lands within 1.2e-5 x the
// tensor's largest |g| (tests/fixtures/README.md), so the tolerance is
// 5e-5 x max |g| + 1e-4 |g|; the bugs tried there move gradients by far more.
class TwinGradients : public ::testing::TestWithParam<std::string> {};

// Every gradient matrix of an adapter against the golden file's "grad.<tensor>"
// with the tolerance above; counts the matrices compared and returns the worst
// ratio (<= 1 passes).
double expect_adapter_grads_match(const Adapter& adapter, const Adapter& grads, const SafetensorsFile& golden,
                                  const std::string& what, int& checked, double atol = 5e-5, double rtol = 1e-4) {
  double worst = 0;
  for (size_t l = 0; l < grads.layers.size(); ++l)
    for (Target t : kAllTargets)
      for (char which : {'A', 'B', 'C'}) {
        const AdapterMatrix& g = grads.layers[l].matrix(t, which);
        if (g.empty()) continue;
        const std::string tensor = "grad." + Adapter::tensor_name(adapter.config, l, t, which);
        if (!golden.find(tensor)) {
          ADD_FAILURE() << what << ": " << golden.path() << " has no " << tensor;
          continue;
        }
        const std::vector<double> want = read_f64(golden, tensor);
        if (want.size() != g.data.size()) {
          ADD_FAILURE() << what << " " << tensor << ": " << g.data.size() << " values, golden " << want.size();
          continue;
        }
        const double ratio = worst_ratio(g.data.data(), want, atol, rtol);
        EXPECT_LE(ratio, 1.0) << what << " " << tensor;
        if (!(ratio <= worst)) worst = ratio;
        ++checked;
      }
  return worst;
}

TEST_P(TwinGradients, AdapterMatchesTwin) {
  TwinCase c(GetParam());
  Adapter adapter = Adapter::load(kFixtures + "/adapters/" + GetParam(), c.model->config());
  Adapter grads = adapter.zeros_like();
  ThreadPool pool(2);
  const auto pass_adapter = make_adapter_train_view(&adapter, &grads);
  TrainPass pass(c.model->config(), pool, weights_view_of(*c.model), nullptr, pass_adapter ? &*pass_adapter : nullptr,
                 c.B * c.T);
  const double loss = pass.run(c.batch(), true, 1.0f / static_cast<float>(c.count)) / static_cast<double>(c.count);
  EXPECT_NEAR(loss, read_f64(*c.golden, "loss")[0], 1e-5);
  int checked = 0;
  expect_adapter_grads_match(adapter, grads, *c.golden, GetParam(), checked);
  EXPECT_GT(checked, 0);
}

INSTANTIATE_TEST_SUITE_P(Variants, TwinGradients, ::testing::ValuesIn(kVariants),
                         [](const auto& info) { return test_name(info.param); });

// `flora train` prints train_pass_bytes before the first step and refuses a run it says
// will not fit: the estimate must stay the bytes the pass's buffers really hold after a
// training step, for full fine-tuning, LoRA and FLoRA, at two shapes. The estimate counts an
// adapter on all seven projections and the widest product's transposes, so it may be a little
// above; 10% either way is the band.
TEST(TrainPass, MemoryEstimateIsWhatTheBuffersHold) {
  auto model = LlamaModel::load(kFixtures + "/f32");
  const LlamaConfig& cfg = model->config();
  for (const std::string& variant : {std::string("full"), std::string("lora"), std::string("ffba")}) {
    for (const auto& [B, T] : {std::pair<int64_t, int64_t>{2, 18}, {3, 61}}) {
      const int64_t before = train_pass_bytes_held();
      ThreadPool pool(2);
      std::unique_ptr<DenseWeights> dense, dense_grads;
      std::optional<TrainGrads> g;
      std::unique_ptr<Adapter> adapter, grads;
      std::optional<AdapterTrainView> view;
      int64_t rank = 0;
      if (variant == "full") {
        dense = std::make_unique<DenseWeights>(DenseWeights::from_model(*model));
        dense_grads = std::make_unique<DenseWeights>(DenseWeights::zeros(cfg));
        g = dense_grads->train_grads();
      } else {
        adapter = std::make_unique<Adapter>(Adapter::load(kFixtures + "/adapters/" + variant, cfg));
        grads = std::make_unique<Adapter>(adapter->zeros_like());
        view = make_adapter_train_view(*adapter, *grads);
        rank = adapter->config.rank;
      }
      std::vector<int32_t> tokens(B * T), targets(B * T);
      for (int64_t i = 0; i < B * T; ++i) tokens[i] = targets[i] = static_cast<int32_t>((i * 37 + 11) % cfg.vocab_size);
      {
        TrainPass pass(cfg, pool, dense ? dense->train_weights() : weights_view_of(*model), g ? &*g : nullptr,
                       view ? &*view : nullptr, B * T);
        pass.run(TrainBatch{B, T, tokens.data(), targets.data()}, true, 1.0f);
        const double held = static_cast<double>(train_pass_bytes_held() - before);
        const double estimate = static_cast<double>(train_pass_bytes(cfg, B, T, rank, variant == "full", 2).total());
        EXPECT_GT(held, 0) << variant;
        EXPECT_NEAR(estimate / held, 1.0, 0.10) << variant << " B " << B << " T " << T << ": estimate " << estimate
                                                << " bytes, held " << held;
      }
      EXPECT_EQ(train_pass_bytes_held(), before) << variant << ": a destroyed pass still counts its buffers";
    }
  }
}

TEST(TwinGradients, FullFineTuningMatchesTwin) {
  TwinCase c("full");
  DenseWeights weights = DenseWeights::from_model(*c.model);
  DenseWeights grads = DenseWeights::zeros(c.model->config());
  TrainGrads g = grads.train_grads();
  ThreadPool pool(2);
  TrainPass pass(c.model->config(), pool, weights.train_weights(), &g, nullptr, c.B * c.T);
  const double loss = pass.run(c.batch(), true, 1.0f / static_cast<float>(c.count)) / static_cast<double>(c.count);
  EXPECT_NEAR(loss, read_f64(*c.golden, "loss")[0], 1e-5);
  for (size_t i = 0; i < grads.specs.size(); ++i) {
    const std::string name = "grad." + grads.specs[i].name;
    ASSERT_NE(c.golden->find(name), nullptr) << name;
    EXPECT_LE(worst_ratio(grads.data[i].data(), read_f64(*c.golden, name), 5e-5, 1e-4), 1.0) << name;
  }
}

// Five AdamW steps and five clipped SGD steps on the twin's batch, through
// the trainer's optimiser (train/optimizer.h), against the twin's losses and
// gradient norms (hyper-parameters from the golden file's metadata).
// Tolerances from tests/fixtures/README.md (the twin run in float32): 1e-4,
// except LoRA's last AdamW entries where AdamW amplifies f32 rounding.
class TwinSteps : public ::testing::TestWithParam<std::string> {};

TEST_P(TwinSteps, LossesMatchTwin) {
  const std::string name = GetParam();
  for (const bool adamw : {true, false}) {
    TwinCase c(name);
    const auto& meta = c.golden->metadata();
    std::unique_ptr<Adapter> adapter, agrads;
    std::unique_ptr<DenseWeights> dense, dgrads;
    TrainGrads gview;
    std::vector<train::ParamSlot> slots;
    if (name == "full") {
      dense = std::make_unique<DenseWeights>(DenseWeights::from_model(*c.model));
      dgrads = std::make_unique<DenseWeights>(DenseWeights::zeros(c.model->config()));
      gview = dgrads->train_grads();
      slots = train::dense_slots(*dense, *dgrads);
      ASSERT_EQ(meta.at("adamw_decay"), "2d");
    } else {
      adapter = std::make_unique<Adapter>(Adapter::load(kFixtures + "/adapters/" + name, c.model->config()));
      agrads = std::make_unique<Adapter>(adapter->zeros_like());
      slots = train::adapter_slots(*adapter, *agrads);
      ASSERT_EQ(meta.at("adamw_decay"), "all");
    }
    for (auto& sl : slots) std::fill(sl.grad, sl.grad + sl.size, 0.0f);
    train::OptimizerOptions oo;
    oo.kind = adamw ? train::OptimizerKind::AdamW : train::OptimizerKind::Sgd;
    if (adamw) {
      oo.beta1 = std::stod(meta.at("adamw_beta1"));
      oo.beta2 = std::stod(meta.at("adamw_beta2"));
      oo.eps = std::stod(meta.at("adamw_eps"));
      oo.weight_decay = std::stod(meta.at("adamw_weight_decay"));
    }
    const double lr = std::stod(meta.at(adamw ? "adamw_lr" : "sgd_lr"));
    const double clip = adamw ? 0.0 : std::stod(meta.at("sgd_clip_max_norm"));
    train::Optimizer opt(oo, slots);
    ThreadPool pool(2);
    const WeightsView w = dense ? dense->train_weights() : weights_view_of(*c.model);
    const auto pass_adapter = make_adapter_train_view(adapter.get(), agrads.get());
    TrainPass pass(c.model->config(), pool, w, dense ? &gview : nullptr, pass_adapter ? &*pass_adapter : nullptr,
                   c.B * c.T);
    const std::vector<double> want = read_f64(*c.golden, adamw ? "adamw_losses" : "sgd_losses");
    const std::vector<double> norms = read_f64(*c.golden, "grad_norms");
    ASSERT_EQ(want.size(), 6u);
    for (int step = 0; step <= 5; ++step) {
      const double loss = pass.run(c.batch(), step < 5, 1.0f / static_cast<float>(c.count)) / c.count;
      const double tol =
          (adamw && name == "lora" && step >= 3) ? std::vector<double>{1e-3, 3e-3, 3e-2}[step - 3] : 1e-4;
      EXPECT_NEAR(loss, want[step], tol) << name << (adamw ? " adamw" : " sgd") << " step " << step;
      if (step == 5) break;
      const double norm = train::clip_grad_norm(slots, clip);
      if (!adamw) {
        EXPECT_NEAR(norm, norms[step], 1e-4 * norms[step]) << name << " grad norm " << step;
      }
      opt.step(lr);
      opt.zero_grads();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, TwinSteps, ::testing::Values("lora", "ffba", "ffba-aorb", "ffa", "full"),
                         [](const auto& info) { return test_name(info.param); });

// With dropout on (the twin runs without): the gradient under a fixed mask
// against the derivative of that same loss along random directions (all A,
// then all B, then all C matrices), by central differences with Richardson
// extrapolation, (4 D(h/2) - D(h)) / 3. The fixture adapters are strong
// (they move logits by ~13), so the loss curves fast: at h = 1e-2 the
// extrapolation is still off by 50%, at 1e-3 within 0.3%, and below that the
// f32 rounding of the loss (~1e-6 / h) takes over; tolerance 0.5% + 1e-3.
TEST(TrainPass, DropoutGradientsMatchFiniteDifferences) {
  auto model = LlamaModel::load(kFixtures + "/f32");
  for (const std::string variant : {"lora", "ffba", "ffa"}) {
    Adapter adapter = Adapter::load(kFixtures + "/adapters/" + variant, model->config());
    Adapter grads = adapter.zeros_like();
    std::vector<int32_t> tokens = {379, 12, 200, 31, 7, 99, 150, 3, 379, 45, 46, 47, 48, 49, 50, 51};
    std::vector<int32_t> targets = {12, 200, 31, 7, 99, 150, 3, -1, -1, 46, 47, 48, 49, 50, 51, -1};
    ThreadPool pool(2);
    const auto pass_adapter = make_adapter_train_view(&adapter, &grads);
    TrainPass pass(model->config(), pool, weights_view_of(*model), nullptr, pass_adapter ? &*pass_adapter : nullptr,
                   16);
    const TrainBatch batch{2, 8, tokens.data(), targets.data()};
    const double plain = pass.run(batch, false, 1.0f);
    pass.set_dropout(0.3f, 77);
    EXPECT_GT(std::fabs(pass.run(batch, true, 1.0f / 12) - plain), 1e-3) << "dropout changed nothing";
    uint64_t rng = 5;
    for (int which = 0; which < 3; ++which) {
      std::vector<std::pair<float*, float>> entries;  // (value, direction)
      double analytic = 0;
      for (size_t l = 0; l < adapter.layers.size(); ++l)
        for (Target t : kAllTargets) {
          auto& la = adapter.layers[l];
          auto& lg = grads.layers[l];
          AdapterMatrix& m = la.matrix(t, "ABC"[which]);
          const AdapterMatrix& g = lg.matrix(t, "ABC"[which]);
          for (size_t i = 0; i < m.data.size(); ++i) {
            const float v = static_cast<float>(2 * uniform01(rng) - 1);
            entries.push_back({&m.data[i], v});
            analytic += double(g.data[i]) * v;
          }
        }
      if (entries.empty()) continue;
      auto loss_at = [&](double h) {
        std::vector<float> keep;
        for (auto& [p, v] : entries) keep.push_back(*p), *p += static_cast<float>(h * v);
        const double loss = pass.run(batch, false, 1.0f) / 12;
        for (size_t i = 0; i < entries.size(); ++i) *entries[i].first = keep[i];
        return loss;
      };
      const double h = 1e-3;
      const double d1 = (loss_at(h) - loss_at(-h)) / (2 * h), d2 = (loss_at(h / 2) - loss_at(-h / 2)) / h;
      const double numeric = (4 * d2 - d1) / 3;
      EXPECT_NEAR(analytic, numeric, 5e-3 * std::fabs(numeric) + 1e-3) << variant << " matrices "
                                                                       << "ABC"[which];
    }
  }
}

// Each value is computed by one thread in a fixed order, so the thread count
// does not change a single bit (what makes resumed runs repeat exactly).
TEST(TrainPass, GradientsDoNotDependOnThreads) {
  auto model = LlamaModel::load(kFixtures + "/f32");
  std::vector<int32_t> tokens = {379, 12, 200, 31, 7, 99, 150, 3, 379, 45, 46, 47, 48, 49, 50, 51};
  std::vector<int32_t> targets = {12, 200, 31, 7, 99, 150, 3, -1, -1, 46, 47, 48, 49, 50, 51, -1};
  std::vector<std::vector<float>> results;
  for (int threads : {1, 2, 3}) {
    DenseWeights weights = DenseWeights::from_model(*model);
    DenseWeights grads = DenseWeights::zeros(model->config());
    TrainGrads g = grads.train_grads();
    ThreadPool pool(threads);
    TrainPass pass(model->config(), pool, weights.train_weights(), &g, nullptr, 16);
    pass.run(TrainBatch{2, 8, tokens.data(), targets.data()}, true, 1.0f / 12);
    std::vector<float> flat;
    for (const auto& v : grads.data) flat.insert(flat.end(), v.begin(), v.end());
    results.push_back(flat);
  }
  EXPECT_EQ(0, std::memcmp(results[0].data(), results[1].data(), results[0].size() * 4));
  EXPECT_EQ(0, std::memcmp(results[0].data(), results[2].data(), results[0].size() * 4));
}

// Gradients accumulate: two micro-batches equal the batch of both.
TEST(TrainPass, MicroBatchesAccumulate) {
  auto model = LlamaModel::load(kFixtures + "/f32");
  Adapter adapter = Adapter::load(kFixtures + "/adapters/ffba", model->config());
  std::vector<int32_t> tokens = {379, 12, 200, 31, 7, 99, 150, 3, 379, 45, 46, 47, 48, 49, 50, 51};
  std::vector<int32_t> targets = {12, 200, 31, 7, 99, 150, 3, -1, -1, 46, 47, 48, 49, 50, 51, -1};
  Adapter whole = adapter.zeros_like(), parts = adapter.zeros_like();
  ThreadPool pool(2);
  const auto p1_adapter = make_adapter_train_view(&adapter, &whole);
  TrainPass p1(model->config(), pool, weights_view_of(*model), nullptr, p1_adapter ? &*p1_adapter : nullptr, 16);
  const double l1 = p1.run(TrainBatch{2, 8, tokens.data(), targets.data()}, true, 1.0f / 12);
  const auto p2_adapter = make_adapter_train_view(&adapter, &parts);
  TrainPass p2(model->config(), pool, weights_view_of(*model), nullptr, p2_adapter ? &*p2_adapter : nullptr, 8);
  double l2 = p2.run(TrainBatch{1, 8, tokens.data(), targets.data()}, true, 1.0f / 12);
  l2 += p2.run(TrainBatch{1, 8, tokens.data() + 8, targets.data() + 8}, true, 1.0f / 12);
  EXPECT_NEAR(l1, l2, 1e-4);
  double worst = 0, largest = 0;
  for (size_t l = 0; l < whole.layers.size(); ++l)
    for (Target t : kAllTargets)
      for (const auto* pair : {&whole.layers[l].A, &whole.layers[l].B, &whole.layers[l].C}) {
        const auto& a = (*pair)[index(t)];
        const auto& b = pair == &whole.layers[l].A   ? parts.layers[l].A[index(t)]
                        : pair == &whole.layers[l].B ? parts.layers[l].B[index(t)]
                                                     : parts.layers[l].C[index(t)];
        for (size_t i = 0; i < a.data.size(); ++i) {
          worst = std::max(worst, test::element_error(a.data[i], b.data[i]));
          largest = std::max(largest, double(std::fabs(a.data[i])));
        }
      }
  EXPECT_GT(largest, 1e-3);
  EXPECT_LE(worst, 1e-5 * largest + 1e-7);
}

// ---- What data parallelism rests on (train/trainer.cpp, train_step) ----
//
// A step's gradient is the left fold ((g_0 + g_1) + g_2) ... over its
// micro-batches, each g_m computed into zeroed buffers, so that the rank that
// runs micro-batch m is free to be any. That needs g_m to depend on micro-batch m
// alone: not on what the pass (its scratch, its saved activations, its dropout
// state) ran before, which a rank's earlier micro-batches would change.

struct MicroBatches {
  std::vector<int32_t> tokens = {379, 12, 200, 31, 7, 99, 150, 3, 379, 45, 46, 47, 48, 49, 50, 51};
  std::vector<int32_t> targets = {12, 200, 31, 7, 99, 150, 3, -1, -1, 46, 47, 48, 49, 50, 51, -1};
  // Micro-batch 0: both sequences (2 x 8); micro-batch 1: the second alone, then the first (1 x 8 each).
  TrainBatch both() const { return {2, 8, tokens.data(), targets.data()}; }
  TrainBatch one(int b) const { return {1, 8, tokens.data() + 8 * b, targets.data() + 8 * b}; }
};

// The trained values and gradients of one case (an adapter variant, or every
// weight) with a pass over them; grads() is every gradient end to end.
struct GradCase {
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<Adapter> adapter, adapter_grads;
  std::unique_ptr<DenseWeights> dense, dense_grads;
  TrainGrads dense_view;
  std::optional<AdapterTrainView> adapter_view;
  std::vector<train::ParamSlot> slots;
  std::unique_ptr<TrainPass> pass;

  GradCase(const std::string& variant, ThreadPool& pool) : model(LlamaModel::load(kFixtures + "/f32")) {
    if (variant == "full") {
      dense = std::make_unique<DenseWeights>(DenseWeights::from_model(*model));
      dense_grads = std::make_unique<DenseWeights>(DenseWeights::zeros(model->config()));
      dense_view = dense_grads->train_grads();
      slots = train::dense_slots(*dense, *dense_grads);
    } else {
      adapter = std::make_unique<Adapter>(Adapter::load(kFixtures + "/adapters/" + variant, model->config()));
      adapter_grads = std::make_unique<Adapter>(adapter->zeros_like());
      adapter_view = make_adapter_train_view(adapter.get(), adapter_grads.get());
      slots = train::adapter_slots(*adapter, *adapter_grads);
    }
    pass = std::make_unique<TrainPass>(model->config(), pool, dense ? dense->train_weights() : weights_view_of(*model),
                                       dense ? &dense_view : nullptr, adapter_view ? &*adapter_view : nullptr, 16);
  }
  std::vector<float> grads() const {
    std::vector<float> flat;
    for (const auto& s : slots) flat.insert(flat.end(), s.grad, s.grad + s.size);
    return flat;
  }
  void zero() {
    for (const auto& s : slots) std::fill(s.grad, s.grad + s.size, 0.0f);
  }
};

void expect_same_bits(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  size_t differ = 0;
  for (size_t i = 0; i < a.size(); ++i) differ += std::memcmp(&a[i], &b[i], sizeof(float)) != 0;
  EXPECT_EQ(differ, 0u) << what << ": " << differ << " of " << a.size() << " gradient elements differ";
}

// g_m from zeroed buffers is the same whatever the pass ran before it (a
// batch of another shape, other dropout masks), bit for bit: every adapter
// variant, with dropout, and full fine-tuning.
TEST(TrainPass, MicroBatchGradientIsItsOwn) {
  const MicroBatches mb;
  ThreadPool pool(2);
  std::vector<std::string> cases = kVariants;
  cases.push_back("full");
  for (const std::string& variant : cases) {
    for (float dropout : {0.0f, 0.25f}) {
      if (variant == "full" && dropout > 0) continue;  // adapter dropout only
      GradCase before(variant, pool), alone(variant, pool);
      before.pass->set_dropout(dropout, 11);
      before.pass->run(mb.both(), true, 1.0f / 12);
      before.zero();
      before.pass->set_dropout(dropout, 12);
      before.pass->run(mb.one(1), true, 1.0f / 12);
      alone.pass->set_dropout(dropout, 12);
      alone.pass->run(mb.one(1), true, 1.0f / 12);
      const std::string what = variant + " dropout " + std::to_string(dropout);
      expect_same_bits(before.grads(), alone.grads(), what);
      EXPECT_EQ(before.pass->sequence_losses(), alone.pass->sequence_losses()) << what;
    }
  }
}

// For an adapter the pass adds a micro-batch's gradient into the buffers in
// one addition per element (ops::weight_grad adds each dot product of the
// micro-batch's rows once, and no adapter matrix gets two weight_grads in one
// pass), so accumulating in place, as flora did before data parallelism, is
// exactly the fold g_0 + g_1 of gradients from zero: one process's adapter
// training gives the bits it always gave. (Full fine-tuning does not: the LM
// head adds its rows in chunks, the embedding per token, so there the fold
// is what defines the bits.)
TEST(TrainPass, AdapterGradientsAccumulateInOneAddition) {
  const MicroBatches mb;
  ThreadPool pool(2);
  for (const std::string& variant : kVariants) {
    GradCase in_place(variant, pool), g0(variant, pool), g1(variant, pool);
    in_place.pass->set_dropout(0.25f, 5);
    in_place.pass->run(mb.both(), true, 1.0f / 24);
    in_place.pass->set_dropout(0.25f, 6);
    in_place.pass->run(mb.one(0), true, 1.0f / 24);
    g0.pass->set_dropout(0.25f, 5);
    g0.pass->run(mb.both(), true, 1.0f / 24);
    g1.pass->set_dropout(0.25f, 6);
    g1.pass->run(mb.one(0), true, 1.0f / 24);
    std::vector<float> fold = g0.grads();
    const std::vector<float> second = g1.grads();
    for (size_t i = 0; i < fold.size(); ++i) fold[i] += second[i];
    expect_same_bits(in_place.grads(), fold, variant);
  }
}

// ---- Shapes across every block boundary (tools/torch_twin.py blocks-golden) ----
//
// tiny_llama/blocks: hidden 40, intermediate 140, vocab 150, head_dim 10, 4
// query / 2 KV heads, rank 3 (ffa 6), batch 2 x 71. T = 71 crosses the
// attention block (kCausalBlock 32, backward.cpp) twice; N = 142 rows and the
// 133 rows with a target cross the LM-head chunk (kHeadRows 64, train_pass.cpp)
// and the matrix kernel's token tile (kTileTokens 64, kernels.cpp) twice;
// V = 150 and F = 140 cross the 64-row product chunks (kRowChunk) twice; the
// ranks divide none of the widths (tile / fold remainders), and 3, 6, 10, 150
// leave remainders of the 4-row / 4- or 2-token register blocks and of the
// SIMD lanes. Tolerances as TwinGolden / TwinGradients above: logits 1e-4,
// loss 1e-5, each gradient 5e-5 x its largest |g| + 1e-4 |g| (exact 0 where
// the twin's gradient is 0). tests/fixtures/README.md has the measured margins.
const std::string kBlocks = kFixtures + "/blocks";

std::string blocks_golden(const std::string& dtype, const std::string& name) {
  return kBlocks + (dtype == "f32" ? "/train/" : "/train-bf16/") + name + "/golden.safetensors";
}

// The fixture still crosses what it is meant to cross (a regenerated set with
// smaller shapes would silently test less).
void expect_crosses_blocks(const TwinCase& c) {
  const LlamaConfig& cfg = c.model->config();
  EXPECT_GT(c.T, 2 * 32) << "attention blocks";
  EXPECT_GT(c.B * c.T, 2 * 64) << "token tiles";
  EXPECT_GT(c.count, 2 * 64) << "LM-head chunks";
  EXPECT_GT(cfg.vocab_size, 2 * 64) << "vocabulary row chunks";
  EXPECT_GT(cfg.intermediate_size, 2 * 64) << "intermediate row chunks";
  EXPECT_GE(c.B, 2);
}

// Logits of every row of the batch from a forward-only run (no targets), against (B, T, V) goldens.
double expect_logits(TrainPass& pass, const TwinCase& c, const std::string& golden_path, const std::string& what) {
  SafetensorsFile golden(golden_path);
  const std::vector<int64_t> tok = read_i64(golden, "tokens");
  constexpr double kFailed = std::numeric_limits<double>::infinity();
  EXPECT_EQ(tok.size(), c.tokens.size()) << what;
  if (tok.size() != c.tokens.size()) return kFailed;
  for (size_t i = 0; i < tok.size(); ++i) EXPECT_EQ(tok[i], c.tokens[i]) << what << " token " << i;
  const std::vector<double> want = read_f64(golden, "logits");
  const int64_t N = c.B * c.T, V = c.model->config().vocab_size;
  EXPECT_EQ(static_cast<int64_t>(want.size()), N * V) << what;
  if (static_cast<int64_t>(want.size()) != N * V) return kFailed;
  std::vector<int32_t> none(static_cast<size_t>(N), -1);
  pass.keep_logits(true);
  pass.run(TrainBatch{c.B, c.T, c.tokens.data(), none.data()}, false, 1.0f);
  pass.keep_logits(false);
  EXPECT_EQ(static_cast<int64_t>(pass.logits().size()), N * V) << what;
  if (static_cast<int64_t>(pass.logits().size()) != N * V) return kFailed;
  const double err = test::max_abs_error(pass.logits().data(), want.data(), static_cast<size_t>(N * V));
  EXPECT_LE(err, 1e-4) << what;
  return err;
}

std::string fmt_error(const char* label, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s%.2e", label, v);
  return buf;
}

// Loss and every gradient of one case on the model `dtype` (f32 or bf16).
void check_blocks_case(const std::string& dtype, const std::string& name, bool check_logits) {
  TwinCase c(kBlocks + "/" + dtype, blocks_golden(dtype, name));
  expect_crosses_blocks(c);
  ThreadPool pool(2);
  const std::string what = dtype + " " + name;
  // The measured errors, printed for tests/fixtures/README.md (logits: -1 when not checked here).
  double logit_err = -1, loss_err = -1, worst = 0;
  auto report = [&] {
    const std::string logits = logit_err < 0 ? "" : fmt_error("max |logits - twin| ", logit_err) + ", ";
    std::printf("[ measured ] %s: %s|loss - twin| %.2e, worst gradient ratio %.4f\n", what.c_str(), logits.c_str(),
                loss_err, worst);
  };
  if (name == "full") {
    DenseWeights weights = DenseWeights::from_model(*c.model);
    DenseWeights grads = DenseWeights::zeros(c.model->config());
    TrainGrads g = grads.train_grads();
    TrainPass pass(c.model->config(), pool, weights.train_weights(), &g, nullptr, c.B * c.T);
    if (check_logits) logit_err = expect_logits(pass, c, kBlocks + "/" + dtype + "/golden.safetensors", what);
    const double loss = pass.run(c.batch(), true, 1.0f / static_cast<float>(c.count)) / static_cast<double>(c.count);
    loss_err = test::element_error(loss, read_f64(*c.golden, "loss")[0]);
    EXPECT_LE(loss_err, 1e-5) << what << " loss " << loss;
    ASSERT_EQ(grads.specs.size(), c.model->config().num_hidden_layers * 9u + 2u);
    for (size_t i = 0; i < grads.specs.size(); ++i) {
      const std::string tensor = "grad." + grads.specs[i].name;
      ASSERT_NE(c.golden->find(tensor), nullptr) << tensor;
      const double ratio = worst_ratio(grads.data[i].data(), read_f64(*c.golden, tensor), 5e-5, 1e-4);
      EXPECT_LE(ratio, 1.0) << what << " " << tensor;
      if (!(ratio <= worst)) worst = ratio;
    }
    report();
    return;
  }
  Adapter adapter = Adapter::load(kBlocks + "/adapters/" + name, c.model->config());
  Adapter grads = adapter.zeros_like();
  const auto pass_adapter = make_adapter_train_view(&adapter, &grads);
  TrainPass pass(c.model->config(), pool, weights_view_of(*c.model), nullptr, pass_adapter ? &*pass_adapter : nullptr,
                 c.B * c.T);
  if (check_logits) logit_err = expect_logits(pass, c, kBlocks + "/adapters/" + name + "/golden.safetensors", what);
  const double loss = pass.run(c.batch(), true, 1.0f / static_cast<float>(c.count)) / static_cast<double>(c.count);
  loss_err = test::element_error(loss, read_f64(*c.golden, "loss")[0]);
  EXPECT_LE(loss_err, 1e-5) << what << " loss " << loss;
  int checked = 0;
  worst = expect_adapter_grads_match(adapter, grads, *c.golden, what, checked);
  // Every tensor of the golden file was compared (none left unchecked).
  int in_file = 0;
  for (const TensorView& tv : c.golden->tensors()) in_file += tv.name.rfind("grad.", 0) == 0;
  EXPECT_EQ(checked, in_file) << what;
  EXPECT_GT(checked, 0);
  report();
}

class TwinBlocks : public ::testing::TestWithParam<std::string> {};

// F32 base: forward logits of every row, loss and every gradient, each variant and full fine-tuning.
TEST_P(TwinBlocks, LogitsLossAndGradientsMatchTwin) { check_blocks_case("f32", GetParam(), true); }

std::vector<std::string> blocks_cases() {
  std::vector<std::string> v = kVariants;
  v.push_back("full");
  return v;
}
INSTANTIATE_TEST_SUITE_P(Variants, TwinBlocks, ::testing::ValuesIn(blocks_cases()),
                         [](const auto& info) { return test_name(info.param); });

// BF16 base (the production dtype; the twin computes in float64 on the same
// RNE-rounded weights): the training pass's forward on the BF16 weights
// (weights_view_of keeps them BF16: the kernels widen in registers), and the
// loss and gradients of adapters on the frozen BF16 base and of full
// fine-tuning from it (f32 masters of the BF16 values).
class TwinBlocksBf16 : public ::testing::TestWithParam<std::string> {};

TEST_P(TwinBlocksBf16, LossAndGradientsMatchTwin) { check_blocks_case("bf16", GetParam(), false); }

INSTANTIATE_TEST_SUITE_P(Cases, TwinBlocksBf16, ::testing::Values("lora", "ffa", "ffba", "full"),
                         [](const auto& info) { return test_name(info.param); });

// BF16 products in training (--products bf16): the forward's products and
// the input gradients dx = dy W of the frozen BF16 base round their
// activations to bf16 (ops.h), so loss and gradients leave the twin by that
// rounding (2^-9 relative per activation), not by f32 sums. Measured on this
// fixture: the worst gradient 1.9e-2 x max |g| (lora; ffba 1.4e-2), of which
// the forward's rounding alone gives 1.8e-2 (1.3e-2); the loss 1.9e-4
// relative. Tolerance: 3e-2 x max |g| + 3e-2 |g|, the loss 1e-3 relative. A
// wrong index, operand or transposition in the dot-product paths moves
// gradients by O(max |g|).
TEST(TwinBlocksBf16, TrainingWithBf16ProductsStaysWithinTheirRounding) {
  if (!ops::bf16_dot_available()) GTEST_SKIP() << "this CPU has no AVX512_BF16 (or the target is below AVX-512)";
  for (const std::string name : {"lora", "ffba"}) {
    TwinCase c(kBlocks + "/bf16", blocks_golden("bf16", name));
    ThreadPool pool(2);
    Adapter adapter = Adapter::load(kBlocks + "/adapters/" + name, c.model->config());
    Adapter grads = adapter.zeros_like();
    const auto view = make_adapter_train_view(&adapter, &grads);
    TrainPass pass(c.model->config(), pool, weights_view_of(*c.model), nullptr, &*view, c.B * c.T);
    double loss;
    {
      test::Bf16Products on;
      loss = pass.run(c.batch(), true, 1.0f / static_cast<float>(c.count)) / static_cast<double>(c.count);
    }
    const double want = read_f64(*c.golden, "loss")[0];
    EXPECT_LE(std::fabs(loss - want), 1e-3 * std::fabs(want)) << name << " loss " << loss;
    int checked = 0;
    const double worst = expect_adapter_grads_match(adapter, grads, *c.golden, name + " bf16 products", checked, 3e-2,
                                                    3e-2);
    EXPECT_GT(checked, 0);
    std::printf("[ measured ] %s, bf16 products: |loss - twin| %.2e, worst gradient ratio %.4f\n", name.c_str(),
                std::fabs(loss - want), worst);
  }
}

TEST(TwinBlocksBf16, TrainingForwardOnBf16WeightsMatchesTwin) {
  TwinCase c(kBlocks + "/bf16", blocks_golden("bf16", "full"));
  ASSERT_EQ(c.model->layers()[0].q.dtype, DType::BF16);
  ThreadPool pool(2);
  TrainPass pass(c.model->config(), pool, weights_view_of(*c.model), nullptr, nullptr, c.B * c.T);
  const double logit_err = expect_logits(pass, c, kBlocks + "/bf16/golden.safetensors", "bf16 base");
  const double loss = pass.run(c.batch(), false, 1.0f) / static_cast<double>(c.count);
  const double loss_err = test::element_error(loss, read_f64(*c.golden, "loss")[0]);
  EXPECT_LE(loss_err, 1e-5) << "bf16 base loss " << loss;
  std::printf("[ measured ] bf16 base (BF16 weights in the kernels): max |logits - twin| %.2e, |loss - twin| %.2e\n",
              logit_err, loss_err);
}

}  // namespace
}  // namespace flora
