// The generation loop: prefill the prompt, then decode one token at a time
// until n tokens or a stop token, timing the first token (TTFT) and each
// following one (TPOT).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "model/forward.h"
#include "model/sampler.h"

namespace flora {

struct GenerationStats {
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  double ttft_s = 0;             // prompt in -> first token chosen
  std::vector<double> decode_s;  // each later token's time
  bool stopped = false;          // ended on a stop token
  double tpot_s() const;         // median of decode_s
};

// Calls on_token(id) as each token is chosen (a stop token is not passed on).
GenerationStats generate(Forward& forward, const std::vector<int32_t>& prompt, int64_t max_new_tokens, Sampler& sampler,
                         const std::vector<int32_t>& stop_ids, const std::function<void(int32_t)>& on_token);

}  // namespace flora
