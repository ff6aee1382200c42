#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "util/error.h"

namespace flora {

namespace {

[[noreturn]] void fail_nan(const float* logits, int64_t n) {
  int64_t i = 0;
  while (i < n && !std::isnan(logits[i])) ++i;
  fail("logits: token {} of {} is NaN: the forward pass computed no number (non-finite weights, or an overflow)", i,
       n);
}

[[noreturn]] void fail_all_negative_infinity(int64_t n) {
  fail("logits: all {} are -Inf: no token can be chosen", n);
}

}  // namespace

int32_t argmax(const float* logits, int64_t n) {
  if (n < 1) fail("logits: expected at least one, found {}", n);
  // One pass; NaN compares false, so it never becomes the best and is caught
  // by the flag instead of a branch per element.
  float best = logits[0];
  int64_t at = 0;
  bool nan = false;
  for (int64_t i = 0; i < n; ++i) {
    const float x = logits[i];
    nan |= x != x;
    if (x > best) best = x, at = i;
  }
  if (nan || best != best) fail_nan(logits, n);
  if (best == -std::numeric_limits<float>::infinity()) fail_all_negative_infinity(n);
  return static_cast<int32_t>(at);
}

Sampler::Sampler(const SamplerParams& p) : params_(p), rng_(p.seed) {
  if (!(p.temperature >= 0)) fail("--temp: expected >= 0, found {}", p.temperature);
  if (p.top_k < 0) fail("--top-k: expected >= 0, found {}", p.top_k);
  if (!(p.top_p > 0 && p.top_p <= 1)) fail("--top-p: expected in (0, 1], found {}", p.top_p);
}

int32_t Sampler::sample(const float* logits, int64_t V) {
  if (params_.temperature == 0.0f) return argmax(logits, V);
  if (V < 1) fail("logits: expected at least one, found {}", V);
  constexpr float kInf = std::numeric_limits<float>::infinity();
  bool nan = false;
  int64_t n_inf = 0;
  float mx = -kInf;
  for (int64_t i = 0; i < V; ++i) {
    const float x = logits[i];
    nan |= x != x;
    n_inf += x == kInf;
    mx = x > mx ? x : mx;
  }
  if (nan) fail_nan(logits, V);
  if (mx == -kInf) fail_all_negative_infinity(V);
  if (n_inf > 0) {
    // Softmax's limit: the +Inf tokens share all the probability equally.
    int64_t pick = std::uniform_int_distribution<int64_t>(0, n_inf - 1)(rng_);
    for (int64_t i = 0; i < V; ++i)
      if (logits[i] == kInf && pick-- == 0) return static_cast<int32_t>(i);
  }
  // From here every logit is finite or -Inf (probability 0): a total order.
  candidates_.resize(V);
  for (int64_t i = 0; i < V; ++i) candidates_[i] = {logits[i], static_cast<int32_t>(i)};
  const int64_t k = params_.top_k > 0 ? std::min<int64_t>(params_.top_k, V) : V;
  auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first; };
  std::partial_sort(candidates_.begin(), candidates_.begin() + k, candidates_.end(), by_logit);
  candidates_.resize(k);
  // Softmax over the k best at the temperature, then keep the smallest prefix
  // whose probability reaches top_p.
  mx = candidates_[0].first;
  double total = 0;
  for (auto& c : candidates_) total += (c.first = std::exp((c.first - mx) / params_.temperature));
  double kept = 0;
  size_t n = 0;
  while (n < candidates_.size()) {
    kept += candidates_[n++].first / total;
    if (kept >= params_.top_p) break;
  }
  // Tokens of probability 0 (-Inf, or underflowed) must not be the fallback
  // pick below when rounding leaves r above 0 after the last subtraction.
  while (n > 1 && candidates_[n - 1].first == 0) --n;
  candidates_.resize(n);
  double mass = 0;
  for (auto& c : candidates_) mass += c.first;
  std::uniform_real_distribution<double> u(0.0, mass);
  double r = u(rng_);
  for (auto& c : candidates_) {
    if ((r -= c.first) <= 0) return c.second;
  }
  return candidates_.back().second;
}

}  // namespace flora
