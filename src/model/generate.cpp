#include "model/generate.h"

#include <algorithm>

#include "util/error.h"
#include "util/timer.h"

namespace flora {

double GenerationStats::tpot_s() const { return median(decode_s); }

GenerationStats generate(Forward& forward, const std::vector<int32_t>& prompt, int64_t max_new_tokens, Sampler& sampler,
                         const std::vector<int32_t>& stop_ids, const std::function<void(int32_t)>& on_token) {
  if (prompt.empty()) fail("generate: the prompt has no tokens");
  GenerationStats stats;
  stats.prompt_tokens = static_cast<int64_t>(prompt.size());
  if (max_new_tokens <= 0) return stats;
  const int64_t V = forward.config().vocab_size;
  auto is_stop = [&](int32_t id) { return std::find(stop_ids.begin(), stop_ids.end(), id) != stop_ids.end(); };

  double t0 = now_seconds();
  const float* logits = forward.forward(prompt.data(), stats.prompt_tokens, false);
  int32_t next = sampler.sample(logits, V);
  stats.ttft_s = now_seconds() - t0;
  for (;;) {
    if (is_stop(next)) {
      stats.stopped = true;
      break;
    }
    on_token(next);
    if (++stats.generated_tokens >= max_new_tokens || forward.position() >= forward.context()) break;
    t0 = now_seconds();
    logits = forward.forward(&next, 1, false);
    next = sampler.sample(logits, V);
    stats.decode_s.push_back(now_seconds() - t0);
  }
  return stats;
}

}  // namespace flora
