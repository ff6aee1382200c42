// The generation loop: prefill the prompt, then decode one token at a time
// until n tokens or a stop token, timing the first token (TTFT) and each
// following one (TPOT). And batched generation: many prompts, several
// sequences decoding together, each with its own KV-cache slot, sampler and
// stop condition.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "model/forward.h"
#include "model/sampler.h"
#include "tokenizer/tokenizer.h"

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

// Stop tokens: the config's eos ids and the tokenizer's end-of-text/turn tokens.
std::vector<int32_t> stop_token_ids(const LlamaConfig& config, const Tokenizer& tokenizer);

// ---- batched generation ----

struct BatchedGenerationOptions {
  int64_t max_new_tokens = 128;
  // Prompt i samples with its own Sampler seeded sampling.seed + i, so that
  // its tokens do not depend on which prompts share its batch (temperature 0:
  // greedy, the default here).
  SamplerParams sampling{0.0f, 40, 0.95f, 0};
  std::vector<int32_t> stop_ids;
  // Prompt tokens admitted into one forward call (at least one whole prompt):
  // bounds the activations of a call, (rows, intermediate_size) floats.
  int64_t max_prefill_tokens = 512;
  // The adapter of each prompt (nullptr: the base model), so that one batch
  // serves requests of several adapters; empty: the Forward's own for all.
  // Not owned; each must outlive the call.
  std::vector<const AdapterExec*> adapters;
};

struct SequenceResult {
  std::vector<int32_t> tokens;  // generated; a stop token is not included
  bool stopped = false;         // ended on a stop token (else max_new_tokens or the context)
};

struct BatchedGenerationStats {
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  int64_t forward_calls = 0;
  int64_t max_rows = 0;  // most rows in one call
  double seconds = 0;
};

// Generates a continuation of every prompt with up to forward.slots()
// sequences in flight (continuous batching): a free slot takes the next prompt,
// whose prefill rides in the same forward call as the decode rows of the
// sequences already running; each sequence leaves at its stop token,
// max_new_tokens or the end of the context, and its slot takes the next prompt.
// Calls on_done(i, result) as prompt i finishes (in finishing order). With
// greedy sampling the tokens equal generate()'s for each prompt alone.
BatchedGenerationStats generate_batched(Forward& forward, const std::vector<std::vector<int32_t>>& prompts,
                                        const BatchedGenerationOptions& options,
                                        const std::function<void(size_t, SequenceResult&&)>& on_done);

}  // namespace flora
