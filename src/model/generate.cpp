#include "model/generate.h"

#include <algorithm>
#include <optional>

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

std::vector<int32_t> stop_token_ids(const LlamaConfig& config, const Tokenizer& tokenizer) {
  std::vector<int32_t> ids(config.eos_token_ids.begin(), config.eos_token_ids.end());
  for (int32_t id : tokenizer.eos_ids())
    if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  return ids;
}

BatchedGenerationStats generate_batched(Forward& forward, const std::vector<std::vector<int32_t>>& prompts,
                                        const BatchedGenerationOptions& options,
                                        const std::function<void(size_t, SequenceResult&&)>& on_done) {
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].empty()) fail("generate: prompt {} has no tokens", i + 1);
    if (static_cast<int64_t>(prompts[i].size()) > forward.context())
      fail("generate: prompt {} has {} tokens; the context holds {}", i + 1, prompts[i].size(), forward.context());
  }
  if (!options.adapters.empty() && options.adapters.size() != prompts.size())
    fail("generate: {} adapters given for {} prompts (one per prompt, or none)", options.adapters.size(),
         prompts.size());
  BatchedGenerationStats stats;
  const double t0 = now_seconds();
  if (options.max_new_tokens <= 0) {
    for (size_t i = 0; i < prompts.size(); ++i) on_done(i, SequenceResult{});
    return stats;
  }
  const int64_t V = forward.config().vocab_size;
  const int slots = forward.slots();
  const auto& stop = options.stop_ids;
  auto is_stop = [&](int32_t id) { return std::find(stop.begin(), stop.end(), id) != stop.end(); };

  // What each slot holds: the sequence running there, if any.
  struct Running {
    size_t index;
    Sampler sampler;
    SequenceResult result;
  };
  std::vector<std::optional<Running>> running(slots);
  std::vector<int32_t> next(slots);  // each running slot's last chosen token, its next input
  auto adapter_of = [&](size_t prompt) -> std::optional<const AdapterExec*> {
    if (options.adapters.empty()) return std::nullopt;
    return options.adapters[prompt];
  };
  std::vector<Forward::Chunk> chunks;
  size_t next_prompt = 0;
  int active = 0;
  while (next_prompt < prompts.size() || active > 0) {
    chunks.clear();
    for (int s = 0; s < slots; ++s)
      if (running[s]) chunks.push_back({s, &next[s], 1, adapter_of(running[s]->index)});
    // Free slots take the next prompts, up to the prefill budget of one call.
    int64_t admitted = 0;
    for (int s = 0; s < slots && next_prompt < prompts.size(); ++s) {
      if (running[s]) continue;
      const auto& prompt = prompts[next_prompt];
      const int64_t n = static_cast<int64_t>(prompt.size());
      if (admitted > 0 && admitted + n > options.max_prefill_tokens) break;
      SamplerParams sp = options.sampling;
      sp.seed += next_prompt;
      running[s].emplace(Running{next_prompt, Sampler(sp), {}});
      forward.reset(s);
      chunks.push_back({s, prompt.data(), n, adapter_of(next_prompt)});
      admitted += n;
      stats.prompt_tokens += n;
      ++next_prompt;
      ++active;
    }
    int64_t rows = 0;
    for (const auto& c : chunks) rows += c.n;
    stats.max_rows = std::max(stats.max_rows, rows);
    const float* logits = forward.forward_batch(chunks, false);
    ++stats.forward_calls;
    for (size_t k = 0; k < chunks.size(); ++k) {
      const int s = chunks[k].slot;
      Running& r = *running[s];
      const int32_t id = r.sampler.sample(logits + static_cast<int64_t>(k) * V, V);
      bool done = false;
      if (is_stop(id)) {
        r.result.stopped = done = true;
      } else {
        r.result.tokens.push_back(id);
        ++stats.generated_tokens;
        next[s] = id;
        done = static_cast<int64_t>(r.result.tokens.size()) >= options.max_new_tokens ||
               forward.position(s) >= forward.context();
      }
      if (done) {
        const size_t index = r.index;
        SequenceResult result = std::move(r.result);
        running[s].reset();
        --active;
        on_done(index, std::move(result));
      }
    }
  }
  stats.seconds = now_seconds() - t0;
  return stats;
}

}  // namespace flora
