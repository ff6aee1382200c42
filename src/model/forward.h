// Inference: prefill and decode through one code path. A call processes T new
// tokens at the positions after those already in the KV cache; T > 1 runs the
// products as matrix-matrix blocks, T = 1 as matrix-vector.
//
// Batched: a Forward can hold several KV-cache slots (independent sequences),
// and one call (forward_batch) can run rows of several of them: a prompt being
// prefilled in one slot beside single decode rows of others. The T rows of the
// call, whatever sequence they belong to, go through every product together
// (one read of the weights for all of them; adapters included, whose terms are
// per row); only RoPE (each row's own position), the KV-cache write (its own
// slot) and attention (over its own slot's cache) look at the sequence. A row's
// arithmetic does not depend on the other rows of the call, so a batched
// sequence gets the same logits, bit for bit, as it gets alone.
//
// Training: forward_train runs the same layers over B sequences of T tokens,
// each from position 0 with no KV cache (keys and values are the pass's own
// rows), and saves in LayerActivations what the backward reads
// (model/train_pass.cpp); the adapter's A inputs may be dropped out.
//
// Per layer, five parallel regions (synchronisation points):
//   1. RMSNorm (each thread its own copy) -> fused q|k|v product -> RoPE -> KV cache
//   2. attention (heads x query tokens)
//   3. o product, residual add in its epilogue
//   4. RMSNorm -> gate|up product -> SiLU(gate) * up in its epilogue
//   5. down product, residual add in its epilogue
// plus one for the final norm and LM head.
//
// Adapters: every chunk of a call names its adapter (or none) and its scale,
// so one call can run rows of several adapters, of any mode, beside rows of
// the base model. Each adapter of a call executes through its mode's strategy
// (model/adapter_strategy.h) on its own rows only, at the four sites of a
// layer (the two entry products and the two exit products). FLoRA adds no
// synchronisation point, whatever the mix; LoRA as PEFT runs it adds two
// regions per adapted projection, partially fused LoRA one per site. A merged
// LoRA is a weight transform: the Forward's `layers`.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "model/adapter_exec.h"
#include "model/adapter_strategy.h"
#include "model/weights.h"
#include "ops/rows.h"
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

// What the training backward reads of one layer, written by forward_train.
// Rows N = B T. Not the attention probabilities: the backward recomputes them
// from qkv (ops::attention_rows_backward).
struct LayerActivations {
  float* x = nullptr;      // (N, d) the layer's input (residual stream)
  float* rstd1 = nullptr;  // (N)
  float* xn1 = nullptr;    // (N, d) RMSNorm(x)
  float* qkv = nullptr;    // (N, q_dim + 2 kv_dim) q and k after RoPE, v
  float* att = nullptr;    // (N, q_dim) attention output
  float* x_mid = nullptr;  // (N, d) residual after attention
  float* rstd2 = nullptr;  // (N)
  float* xn2 = nullptr;    // (N, d)
  float* gate = nullptr;   // (N, f) gate product (with adapter), before SiLU
  float* up = nullptr;     // (N, f)
  float* h = nullptr;      // (N, f) SiLU(gate) * up: read within the layer only, so layers may share it
  AdapterActivations adapter;
};

class Forward {
 public:
  // context: the most positions a sequence will hold (prompt + generated).
  // adapter: the adapter of chunks that name none (forward() included);
  // optional, not owned, must outlive the calls that run it. layers: optional
  // replacement of the model's layer weights (a merged LoRA), not owned.
  // slots: KV caches of that many independent sequences, `context` positions each.
  Forward(const LlamaModel& model, ThreadPool& pool, int64_t context, const AdapterExec* adapter = nullptr,
          const std::vector<LayerWeights>* layers = nullptr, int slots = 1);
  // A Forward for forward_train only (no KV cache) over `weights` (the frozen
  // base, or full fine-tuning's f32 masters, read as they change), not owned.
  Forward(const LlamaConfig& config, const WeightsView& weights, ThreadPool& pool);

  // Runs `tokens` (T of them) after the positions cached in slot 0 and returns
  // the logits: of the last token (V) or, with all_logits, of every token (T, V).
  const float* forward(const int32_t* tokens, int64_t T, bool all_logits);

  // One sequence's share of a batched call: n new tokens of KV-cache slot
  // `slot`, at the positions after those cached there, run with `adapter`:
  // unset = the Forward's own (its constructor's, possibly none), nullptr =
  // the base model, else any adapter made for this model (not owned; it must
  // outlive the call). scale: unset = the adapter's own s.
  struct Chunk {
    Chunk() = default;
    Chunk(int slot, const int32_t* tokens, int64_t n, std::optional<const AdapterExec*> adapter = std::nullopt,
          std::optional<float> scale = std::nullopt)
        : slot(slot), tokens(tokens), n(n), adapter(adapter), scale(scale) {}
    int slot = 0;
    const int32_t* tokens = nullptr;
    int64_t n = 0;
    std::optional<const AdapterExec*> adapter;
    std::optional<float> scale;
  };
  // Runs the chunks (distinct slots) as one pass over the weights and returns
  // the logits of each chunk's last token, (chunks, V) in the order given, or
  // with all_logits of every token, (sum of n, V) chunk after chunk. The
  // pointer is valid until the next call.
  const float* forward_batch(const std::vector<Chunk>& chunks, bool all_logits);

  // The training forward: B sequences of T tokens (B T rows, sequence b at
  // rows b T..), each its own causal context from position 0, every row run
  // with `adapter` (null: none) at its own scale, its A inputs under
  // `dropout`. Writes acts[l] for every layer (buffers sized for B, T and the
  // adapter's rank; adapter entries where the adapter's mode saves them).
  // Returns the residual stream after the last layer, (B T, d), valid until
  // the next call. Token ids are not checked here (the training pass does).
  const float* forward_train(const int32_t* tokens, int64_t B, int64_t T, const AdapterExec* adapter,
                             const AdapterDropout& dropout, const std::vector<LayerActivations>& acts);

  const LlamaConfig& config() const { return cfg_; }
  int slots() const { return static_cast<int>(caches_.size()); }
  int64_t position(int slot = 0) const { return caches_.at(slot).size(); }
  int64_t context() const { return caches_[0].capacity(); }
  // Forgets the positions of `slot` from n on (n <= position(slot)): the next
  // call continues at n, as if only the first n tokens had been run.
  void truncate(int slot, int64_t n);
  void reset(int slot) { truncate(slot, 0); }
  void reset() {  // every slot
    for (auto& c : caches_) c.set_size(0);
  }
  // Synchronisation points of the last forward() call.
  uint64_t last_sync_points() const { return last_sync_points_; }

 private:
  // The rows of one call that belong to one sequence: rows [row0, row0 + n)
  // of the activations, at positions p0.. of slot `slot`.
  struct Segment {
    int slot;
    int64_t row0, n, p0;
  };

  const float* run(const std::vector<Chunk>& chunks, bool all_logits);
  // The layout of a call: segments (chunk by chunk), each row's segment and
  // position, the attention items and the RoPE angles of every row.
  void lay_out(const std::vector<Chunk>& chunks, const std::vector<int64_t>& p0s);
  void ensure_buffers(int64_t T, int64_t n_out);
  // Every layer over the T rows of the call (in x_).
  void layers(int64_t T);
  // Where layer l reads and writes its activations: the Forward's own
  // buffers, or (forward_train) the layer's LayerActivations.
  void bind_layer(int64_t layer);
  void attention_entry(int64_t layer, int64_t T);
  void rope_and_cache(int64_t layer, int64_t head, int64_t T);
  void attention(int64_t layer);
  void ffn_entry(int64_t layer, int64_t T);
  // Exit product x += W u (+ adapters) for o (u = att) or down (u = h).
  void exit_product(int64_t layer, const Site& site, const MatrixRef& w, const float* u, int64_t ld_u, int64_t T);
  // The input of a site's products: u, and the A inputs under dropout (forward_train).
  SiteInput site_input(int64_t layer, const Site& site, const float* u, int64_t ld_u, int64_t n_in, int64_t T);
  // Fails unless the adapter's matrices have this model's shapes.
  void check_adapter_shapes(const AdapterExec& a, int slot) const;
  // The adapters of the call: a strategy per distinct adapter, over its runs of rows.
  void plan_adapters(const std::vector<Chunk>& chunks);
  // The strategies' own work items of a site's product region, and whether
  // the site's outputs wait for (defers) or have work in (follow) a follow-up region.
  struct SitePlan {
    std::vector<std::pair<AdapterStrategy*, int64_t>> items;
    bool defers = false, follow_up = false;
  };
  SitePlan plan_site(const Site& site) const;
  void entry_region(ops::ProductRegion& g, int64_t layer, const Site& site, const SitePlan& plan, const float* norm_w,
                    float* norm_out, float* rstd_out, const SiteOutput* outs);
  // The plan's work items and the strategies' after_chunks in a product region; input_of(x) gives the SiteInput.
  template <typename InputOf>
  void add_items(ops::ProductRegion& g, int64_t layer, const Site& site, const SitePlan& plan, const InputOf& input_of);

  const LlamaConfig& cfg_;
  WeightsView w_;
  ThreadPool& pool_;
  std::vector<KVCache> caches_;   // (slots); none for forward_train
  std::vector<double> inv_freq_;  // (head_dim / 2)
  int64_t capacity_T_ = 0;
  // Activations of the T tokens in flight:
  std::vector<float> x_;                    // (T, d) residual stream
  std::vector<float> xn_;                   // (threads, T, d) each thread's normalised copy
  std::vector<float> qkv_;                  // (T, q_dim + 2 kv_dim)
  std::vector<float> att_;                  // (T, q_dim) attention output
  std::vector<float> gate_;                 // (T, f) gate product, then SiLU(gate) * up
  std::vector<float> up_;                   // (T, f)
  std::vector<float> block_scores_;         // (threads, ops::kAttentionBlock, context or T) scores of a block of queries
  int64_t train_T_ = 0;                     // forward_train's sequence length (its attention's most keys)
  std::vector<float> logits_;               // (T or 1, V)
  std::vector<float> rope_cos_, rope_sin_;  // (T, head_dim / 2) for the positions in flight
  // The call in flight: its segments, each row's segment and position, the
  // attention work items, and the rows whose logits are returned.
  std::vector<Segment> segments_;
  std::vector<int32_t> row_segment_;  // (T)
  std::vector<int64_t> row_pos_;      // (T)
  std::vector<ops::AttentionSegment> attention_segments_;  // (segments) of the layer in flight
  std::vector<int64_t> out_rows_;         // (n_out)
  std::vector<char> slot_used_;           // (slots) scratch of the distinct-slot check
  const AdapterExec* adapter_ = nullptr;  // of chunks that name none
  // forward_train: the layers' activations (else null), the dropout, its
  // masked A inputs (3, T, max(d, q_dim, f)), and the bound layer's.
  const std::vector<LayerActivations>* acts_ = nullptr;
  AdapterDropout dropout_;
  std::vector<float> dropped_;
  const LayerActivations* act_ = nullptr;
  // The bound layer's buffers (bind_layer): q|k|v, attention output, gate, up and h = SiLU(gate) * up.
  float *qkv_p_ = nullptr, *att_p_ = nullptr, *gate_p_ = nullptr, *up_p_ = nullptr, *h_p_ = nullptr;
  // Strategies kept across calls for their buffers: the k-th distinct adapter
  // of a mode in a call runs on strategy_pool_[mode][k]. active_: this call's.
  std::array<std::vector<std::unique_ptr<AdapterStrategy>>, 3> strategy_pool_;
  std::vector<AdapterStrategy*> active_;
  uint64_t last_sync_points_ = 0;
};

}  // namespace flora
