#include "model/sampler.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace flora {

int32_t argmax(const float* logits, int64_t n) {
  return static_cast<int32_t>(std::max_element(logits, logits + n) - logits);
}

Sampler::Sampler(const SamplerParams& p) : params_(p), rng_(p.seed) {
  if (!(p.temperature >= 0)) fail("--temp: expected >= 0, found {}", p.temperature);
  if (p.top_k < 0) fail("--top-k: expected >= 0, found {}", p.top_k);
  if (!(p.top_p > 0 && p.top_p <= 1)) fail("--top-p: expected in (0, 1], found {}", p.top_p);
}

int32_t Sampler::sample(const float* logits, int64_t V) {
  if (params_.temperature == 0.0f) return argmax(logits, V);
  candidates_.resize(V);
  for (int64_t i = 0; i < V; ++i) candidates_[i] = {logits[i], static_cast<int32_t>(i)};
  const int64_t k = params_.top_k > 0 ? std::min<int64_t>(params_.top_k, V) : V;
  auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first; };
  std::partial_sort(candidates_.begin(), candidates_.begin() + k, candidates_.end(), by_logit);
  candidates_.resize(k);
  // Softmax over the k best at the temperature, then keep the smallest prefix
  // whose probability reaches top_p.
  const float mx = candidates_[0].first;
  double total = 0;
  for (auto& c : candidates_) total += (c.first = std::exp((c.first - mx) / params_.temperature));
  double kept = 0;
  size_t n = 0;
  while (n < candidates_.size()) {
    kept += candidates_[n++].first / total;
    if (kept >= params_.top_p) break;
  }
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
