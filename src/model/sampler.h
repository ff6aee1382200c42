// Choosing the next token from logits: greedy, or temperature with top-k and
// top-p (nucleus) filtering, seeded so that a run can be repeated.
// Defined for every float: a NaN logit is a flora::Error (sorting an unordered
// range is undefined behaviour, and a NaN means the forward pass computed
// nonsense), +Inf logits take all the probability (the first +Inf when greedy,
// one of them uniformly when sampling), -Inf logits none, and logits that are
// all -Inf are an error (no token can be chosen).
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace flora {

struct SamplerParams {
  float temperature = 0.8f;  // 0: greedy (argmax)
  int top_k = 40;            // 0: no limit
  float top_p = 0.95f;       // 1: no limit
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplerParams& params);
  int32_t sample(const float* logits, int64_t vocab_size);

 private:
  SamplerParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> candidates_;
};

// The first index of the largest logit; fails on NaN, on all -Inf and on n < 1.
int32_t argmax(const float* logits, int64_t n);

}  // namespace flora
