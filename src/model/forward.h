// Inference: prefill and decode through one code path. A call processes T new
// tokens at the positions after those already in the KV cache; T > 1 runs the
// products as matrix-matrix blocks, T = 1 as matrix-vector.
//
// Per layer, five parallel regions (synchronisation points):
//   1. RMSNorm (each thread its own copy) -> fused q|k|v product -> RoPE -> KV cache
//   2. attention (heads x query tokens)
//   3. o product, residual add in its epilogue
//   4. RMSNorm -> gate|up product -> SiLU(gate) * up in its epilogue
//   5. down product, residual add in its epilogue
// plus one for the final norm and LM head.
#pragma once
#include <cstdint>
#include <vector>

#include "model/weights.h"
#include "util/threads.h"

namespace flora {

// Keys and values of past positions, f32. k, v: (layers, capacity, kv_dim).
class KVCache {
 public:
  KVCache(const LlamaConfig& config, int64_t capacity);
  int64_t capacity() const { return capacity_; }
  int64_t size() const { return size_; }
  void set_size(int64_t n) { size_ = n; }
  float* k(int64_t layer, int64_t pos) { return k_.data() + (layer * capacity_ + pos) * kv_dim_; }
  float* v(int64_t layer, int64_t pos) { return v_.data() + (layer * capacity_ + pos) * kv_dim_; }

 private:
  int64_t capacity_, kv_dim_, size_ = 0;
  std::vector<float> k_, v_;
};

class Forward {
 public:
  // context: the most positions this sequence will hold (prompt + generated).
  Forward(const LlamaModel& model, ThreadPool& pool, int64_t context);

  // Runs `tokens` (T of them) after the cached positions and returns the
  // logits: of the last token (V) or, with all_logits, of every token (T, V).
  const float* forward(const int32_t* tokens, int64_t T, bool all_logits);
  const LlamaConfig& config() const { return cfg_; }
  int64_t position() const { return cache_.size(); }
  int64_t context() const { return cache_.capacity(); }
  void reset() { cache_.set_size(0); }
  // Synchronisation points of the last forward() call.
  uint64_t last_sync_points() const { return last_sync_points_; }

 private:
  void ensure_buffers(int64_t T, bool all_logits);
  void attention_entry(int64_t layer, int64_t T, int64_t p0);
  void attention(int64_t layer, int64_t T, int64_t p0);

  const LlamaModel& model_;
  const LlamaConfig& cfg_;
  ThreadPool& pool_;
  KVCache cache_;
  std::vector<double> inv_freq_;  // (head_dim / 2)
  int64_t capacity_T_ = 0;
  // Activations of the T tokens in flight:
  std::vector<float> x_;                    // (T, d) residual stream
  std::vector<float> xn_;                   // (threads, T, d) each thread's normalised copy
  std::vector<float> qkv_;                  // (T, q_dim + 2 kv_dim)
  std::vector<float> att_;                  // (T, q_dim) attention output
  std::vector<float> gate_;                 // (T, f) gate product, then SiLU(gate) * up
  std::vector<float> up_;                   // (T, f)
  std::vector<float> scores_;               // (threads, context) attention scores of one query
  std::vector<float> logits_;               // (T or 1, V)
  std::vector<float> rope_cos_, rope_sin_;  // (T, head_dim / 2) for the positions in flight
  uint64_t last_sync_points_ = 0;
};

}  // namespace flora
