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
//
// Adapters (model/adapter_exec.h) ride in these regions. FLoRA: every thread
// computes the sub-block's low-rank z = sum A_m u itself (r rows, a few percent
// of its share of the base rows) so that repeat-and-add can run in the base
// product's epilogue; the exit product reads [c; phi(z)] in the same region.
// No synchronisation point is added. LoRA as PEFT runs it adds two regions per
// adapted projection (A product, then B product with the scaled add) and
// partially fused LoRA one per product group (the A rows ride in the base
// product, the B product and add follow).
#pragma once
#include <cstdint>
#include <vector>

#include "model/adapter_exec.h"
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
  // adapter: optional, not owned, must outlive the Forward. layers: optional
  // replacement of the model's layer weights (a merged LoRA), not owned.
  Forward(const LlamaModel& model, ThreadPool& pool, int64_t context, const AdapterExec* adapter = nullptr,
          const std::vector<LayerWeights>* layers = nullptr);

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
  void rope_and_cache(int64_t layer, int64_t head, int64_t T, int64_t p0);
  void attention(int64_t layer, int64_t T, int64_t p0);
  void attention_blocked(int64_t layer, int64_t T, int64_t p0);
  void ffn_entry(int64_t layer, int64_t T);
  // Exit product x += W u (+ adapter) for o (u = att) or down (u = h).
  void exit_product(int64_t layer, Target m, const MatrixRef& w, const float* u, int64_t ld_u, int64_t T);
  // FLoRA: z_m = A_m u for the sub-block's entry targets into this thread's
  // buffer; thread 0 also forms phi(z) of the sum (with the carried z).
  void flora_entry_z(int t, const AdapterExec::Layer& a, std::initializer_list<Target> targets, const float* u,
                     int64_t ld_u, int64_t T);
  void repeat_add(float* y, int64_t ldy, int64_t T, const float* z, int64_t row0, int64_t row1) const;
  // LoRA: y[:, col..] += s B_m (A_m u) as two parallel regions (PEFT's way).
  void lora_unfused(const AdapterExec::Layer& a, Target m, const float* u, int64_t ld_u, int64_t T, float* y,
                    int64_t ldy);
  float* thread_z(int t, int slot) { return z_entry_.data() + (static_cast<size_t>(t) * 3 + slot) * z_stride_; }

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
  std::vector<float> block_scores_;         // (threads, kQueryBlock, context) prefill: scores of a block of queries
  std::vector<float> logits_;               // (T or 1, V)
  std::vector<float> rope_cos_, rope_sin_;  // (T, head_dim / 2) for the positions in flight
  const AdapterExec* adapter_ = nullptr;
  const std::vector<LayerWeights>& layers_;
  // Adapter state, r = adapter rank (all (T, r) row-major):
  size_t z_stride_ = 0;         // T * r
  std::vector<float> z_entry_;  // (threads, 3, T, r) each thread's z_m of the entry targets (FLoRA)
  std::vector<float> z_exit_;   // (threads, T, r) each thread's A_exit u (FLoRA)
  std::vector<float> phi_z_;    // (T, r) phi(z) of the sub-block (FLoRA, written by thread 0)
  std::vector<float> phi_z_s_;  // (T, r) s * phi(z)
  std::vector<float> carry_;    // (T, r) z carried to the next sub-block (FLoRA, thread 0 only)
  std::vector<float> lora_z_;   // (kTargets, T, r) s * A_m u (LoRA modes)
  uint64_t last_sync_points_ = 0;
};

}  // namespace flora
