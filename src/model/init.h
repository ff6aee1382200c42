// Random models of exact real shapes (speed depends on shapes, not values):
// what `flora init-model` writes.
#pragma once
#include <cstdint>
#include <string>

#include "model/config.h"
#include "util/dtype.h"

namespace flora {

// Hugging Face's default max_shard_size for save_pretrained ("5GB").
constexpr size_t kDefaultMaxShardBytes = 5'000'000'000ull;

// Writes DIR/config.json and the weights (sharded above max_shard_bytes, as
// Hugging Face does) with values drawn from a seeded generator: projections
// and the embedding uniform with standard deviation 1/sqrt(fan_in), norms 1,
// so activations stay of order one through every layer and logits are spread.
// Each tensor's values depend only on (seed, tensor name).
void write_random_model(const LlamaConfig& config, const std::string& dir, uint64_t seed, DType dtype,
                        size_t max_shard_bytes = kDefaultMaxShardBytes);

}  // namespace flora
