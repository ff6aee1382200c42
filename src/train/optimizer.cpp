#include "train/optimizer.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <map>
#include <numbers>
#include <set>
#include <string>

#include "io/safetensors.h"
#include "util/error.h"

namespace flora::train {

OptimizerKind parse_optimizer_kind(const std::string& name) {
  if (name == "adamw") return OptimizerKind::AdamW;
  if (name == "sgd") return OptimizerKind::Sgd;
  fail("optimizer '{}': expected adamw or sgd", name);
}

std::string optimizer_kind_name(OptimizerKind kind) { return kind == OptimizerKind::AdamW ? "adamw" : "sgd"; }

Optimizer::Optimizer(const OptimizerOptions& options, std::vector<ParamSlot> slots)
    : options_(options), slots_(std::move(slots)) {
  const auto in_unit = [](double b) { return b >= 0 && b < 1; };
  if (!in_unit(options.beta1) || !in_unit(options.beta2))
    fail("optimizer: expected betas in [0, 1), found ({}, {})", options.beta1, options.beta2);
  if (!(options.eps >= 0)) fail("optimizer: expected eps >= 0, found {}", options.eps);
  if (!(options.weight_decay >= 0)) fail("optimizer: expected weight_decay >= 0, found {}", options.weight_decay);
  std::set<std::string> names;
  for (const ParamSlot& s : slots_) {
    if (s.name.empty()) fail("optimizer: expected a name for every parameter, found an empty one");
    if (!names.insert(s.name).second) fail("optimizer: parameter '{}': expected unique names, found it twice", s.name);
    if (s.size < 0) fail("optimizer: parameter '{}': expected a size >= 0, found {}", s.name, s.size);
    if (s.size > 0 && (s.value == nullptr || s.grad == nullptr))
      fail("optimizer: parameter '{}': expected value and gradient buffers, found a null pointer", s.name);
  }
  if (options_.kind == OptimizerKind::AdamW) {
    for (const ParamSlot& s : slots_) {
      m_.emplace_back(s.size, 0.0f);
      v_.emplace_back(s.size, 0.0f);
    }
  }
}

const std::vector<float>& Optimizer::m(size_t i) const {
  static const std::vector<float> none;
  FLORA_ASSERT(i < slots_.size());
  return m_.empty() ? none : m_[i];
}

const std::vector<float>& Optimizer::v(size_t i) const {
  static const std::vector<float> none;
  FLORA_ASSERT(i < slots_.size());
  return v_.empty() ? none : v_[i];
}

std::vector<std::vector<float>*> Optimizer::state_buffers() {
  std::vector<std::vector<float>*> out;
  for (size_t i = 0; i < m_.size(); ++i) out.push_back(&m_[i]), out.push_back(&v_[i]);
  return out;
}

void Optimizer::set_step_count(int64_t steps) {
  if (steps < 0) fail("optimizer: expected a step count >= 0, found {}", steps);
  step_ = steps;
}

void Optimizer::step(double lr) {
  if (!(lr >= 0) || !std::isfinite(lr)) fail("optimizer: expected a learning rate >= 0, found {}", lr);
  ++step_;
  const double wd = options_.weight_decay;
  if (options_.kind == OptimizerKind::Sgd) {
    const float neg_lr = static_cast<float>(-lr), fwd = static_cast<float>(wd);
    for (const ParamSlot& s : slots_) {
      const bool decay = s.decay && wd != 0;
      for (int64_t i = 0; i < s.size; ++i) {
        const float g = decay ? s.grad[i] + fwd * s.value[i] : s.grad[i];
        s.value[i] += neg_lr * g;
      }
    }
    return;
  }
  // torch's scalars are Python floats (double); the tensor ops see them as float.
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double bc1 = 1.0 - std::pow(b1, static_cast<double>(step_));
  const double bc2 = 1.0 - std::pow(b2, static_cast<double>(step_));
  const float neg_step_size = static_cast<float>(-(lr / bc1));
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  const float eps = static_cast<float>(options_.eps);
  const float decay_factor = static_cast<float>(1.0 - lr * wd);
  const float fb1 = static_cast<float>(b1), fb2 = static_cast<float>(b2);
  const float one_minus_b1 = static_cast<float>(1.0 - b1), one_minus_b2 = static_cast<float>(1.0 - b2);
  for (size_t k = 0; k < slots_.size(); ++k) {
    const ParamSlot& s = slots_[k];
    float* m = m_[k].data();  // (size)
    float* v = v_[k].data();  // (size)
    const bool decay = s.decay && wd != 0;
    for (int64_t i = 0; i < s.size; ++i) {
      const float g = s.grad[i];
      float p = s.value[i];
      if (decay) p *= decay_factor;
      m[i] = fb1 * m[i] + one_minus_b1 * g;
      v[i] = fb2 * v[i] + one_minus_b2 * g * g;
      const float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
      s.value[i] = p + neg_step_size * (m[i] / denom);
    }
  }
}

void Optimizer::zero_grads() {
  for (const ParamSlot& s : slots_)
    if (s.size > 0) std::memset(s.grad, 0, static_cast<size_t>(s.size) * sizeof(float));
}

void Optimizer::save_state(const std::string& path) const {
  std::vector<TensorToWrite> tensors;
  if (options_.kind == OptimizerKind::AdamW) {
    for (size_t k = 0; k < slots_.size(); ++k) {
      tensors.push_back({"m." + slots_[k].name, DType::F32, {slots_[k].size}, m_[k].data()});
      tensors.push_back({"v." + slots_[k].name, DType::F32, {slots_[k].size}, v_[k].data()});
    }
  }
  write_safetensors(path, tensors,
                    {{"optimizer", optimizer_kind_name(options_.kind)}, {"step", std::to_string(step_)}});
}

void Optimizer::load_state(const std::string& path) {
  const SafetensorsFile file(path);
  const auto& meta = file.metadata();
  const auto kind = meta.find("optimizer");
  if (kind == meta.end()) fail("{}: __metadata__: expected key 'optimizer' (an optimizer state file)", path);
  if (kind->second != optimizer_kind_name(options_.kind))
    fail("{}: expected the state of optimizer {}, found {}", path, optimizer_kind_name(options_.kind),
         printable(kind->second));
  const auto step_it = meta.find("step");
  if (step_it == meta.end()) fail("{}: __metadata__: expected key 'step'", path);
  int64_t step = -1;
  {
    const std::string& t = step_it->second;
    size_t used = 0;
    try {
      step = std::stoll(t, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != t.size() || step < 0 || !std::isdigit(static_cast<unsigned char>(t[0])))
      fail("{}: __metadata__ key 'step': expected an integer >= 0, found '{}'", path, printable(t));
  }

  std::set<std::string> expected;
  std::vector<std::vector<float>> m, v;  // read fully before anything is changed
  if (options_.kind == OptimizerKind::AdamW) {
    auto read = [&](const std::string& name, int64_t size) {
      expected.insert(name);
      const TensorView* t = file.find(name);
      if (!t) fail("{}: tensor '{}': expected it (a parameter of the optimizer), found none", path, name);
      if (t->dtype != DType::F32 || t->shape != std::vector<int64_t>{size})
        fail("{}: tensor '{}': expected F32 {}, found {} {}", path, name, format_shape({size}), dtype_name(t->dtype),
             format_shape(t->shape));
      std::vector<float> out(size);
      if (size > 0) std::memcpy(out.data(), t->data, static_cast<size_t>(size) * sizeof(float));
      return out;
    };
    for (const ParamSlot& s : slots_) {
      m.push_back(read("m." + s.name, s.size));
      v.push_back(read("v." + s.name, s.size));
    }
  }
  for (const TensorView& t : file.tensors())
    if (!expected.count(t.name))
      fail("{}: tensor '{}': expected only the state of this optimizer's parameters, found a tensor of none", path,
           printable(t.name));
  m_ = std::move(m);
  v_ = std::move(v);
  step_ = step;
}

double global_grad_norm(const std::vector<ParamSlot>& slots) {
  double sum = 0;
  for (const ParamSlot& s : slots)
    for (int64_t i = 0; i < s.size; ++i) sum += static_cast<double>(s.grad[i]) * s.grad[i];
  return std::sqrt(sum);
}

double clip_grad_norm(const std::vector<ParamSlot>& slots, double max_norm) {
  if (!(max_norm >= 0)) fail("clip_grad_norm: expected max_norm >= 0 (0 = off), found {}", max_norm);
  const double norm = global_grad_norm(slots);
  if (max_norm == 0) return norm;
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1) {
    const float c = static_cast<float>(coef);
    for (const ParamSlot& s : slots)
      for (int64_t i = 0; i < s.size; ++i) s.grad[i] *= c;
  }
  return norm;
}

LrSchedule parse_lr_schedule(const std::string& name) {
  if (name == "constant") return LrSchedule::Constant;
  if (name == "linear") return LrSchedule::Linear;
  if (name == "cosine") return LrSchedule::Cosine;
  fail("lr schedule '{}': expected constant, linear or cosine", name);
}

std::string lr_schedule_name(LrSchedule schedule) {
  switch (schedule) {
    case LrSchedule::Constant:
      return "constant";
    case LrSchedule::Linear:
      return "linear";
    case LrSchedule::Cosine:
      return "cosine";
  }
  return "?";
}

double learning_rate(LrSchedule schedule, double base_lr, int64_t step, int64_t warmup_steps, int64_t total_steps) {
  if (step < 0 || warmup_steps < 0 || total_steps < 0)
    fail("learning_rate: expected step, warmup_steps and total_steps >= 0, found {}, {}, {}", step, warmup_steps,
         total_steps);
  if (step < warmup_steps)
    return base_lr * static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup_steps));
  const double span = static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  switch (schedule) {
    case LrSchedule::Constant:
      return base_lr;
    case LrSchedule::Linear:
      return base_lr * std::max(0.0, static_cast<double>(total_steps - step) / span);
    case LrSchedule::Cosine: {
      const double progress = std::min(1.0, static_cast<double>(step - warmup_steps) / span);
      return base_lr * std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * progress)));
    }
  }
  return base_lr;
}

}  // namespace flora::train
