// Training: the model's one forward (Forward::forward_train, model/forward.h:
// the layer function inference runs, here saving what the backward needs in
// LayerActivations), then the LM head with the cross-entropy, and the
// backward, written out by hand op by op as llm.c does (the ops are in
// ops/backward.h and ops/rows.h). Parameter gradients are computed only for
// what is trained — an adapter, or every weight (full fine-tuning) — and
// accumulate with +=, so gradient accumulation over micro-batches is free;
// input gradients flow through frozen weights.
//
// Layout: a batch is B sequences of T positions, N = B T rows, each sequence
// its own causal context from position 0. Rows are token-major: row b T + t.
//
// The adapter math is ADAPTERS.md's. The forward runs it through the adapter's
// execution strategy (model/adapter_strategy.h: fused for FLoRA, as inference
// runs it); the backward computes its gradients directly (separate small
// products). Per sub-block (attention: q, k, v -> o; FFN: gate, up -> down):
//   entry m:  z_m = A_m drop(u);  LoRA: y_m += s B_m z_m;  FLoRA repeat-add: y_m += s tile(z_m)
//   FLoRA:    z = sum z_m + carry_in;  p = phi(z)
//   exit:     y = W c + s B p;  ze = A drop(c);  y += s tile(ze) (repeat-add);  carry_out = ze + C p
// carry_out joins the next sub-block's sum (attention -> FFN -> next layer).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "model/adapter_exec.h"
#include "model/weights.h"
#include "util/threads.h"

namespace flora {

// Gradients of full fine-tuning, f32, shaped as the weights; null = frozen.
struct TrainLayerGrads {
  float *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr, *gate = nullptr, *up = nullptr, *down = nullptr;
  float *attn_norm = nullptr, *ffn_norm = nullptr;
};
struct TrainGrads {
  float* embed = nullptr;    // (V, d); receives the LM head's gradient too when tied
  float* lm_head = nullptr;  // (V, d); null when tied
  float* final_norm = nullptr;
  std::vector<TrainLayerGrads> layers;
};

struct TrainBatch {
  int64_t B = 0, T = 0;
  const int32_t* tokens = nullptr;   // (B, T)
  const int32_t* targets = nullptr;  // (B, T): the token position t should predict, or -1 (not in the loss)
};

// The bytes a TrainPass holds at its largest, for batches of B sequences of up
// to T tokens: every layer's saved activations (the attention probabilities,
// B x heads x T x T, among them) and the buffers of the backward and of the LM
// head. adapter_rank 0: no adapter; an adapter is counted as if it adapted all
// seven projections. full: every weight gets a gradient. An estimate from the
// buffers' shapes (State in train_pass.cpp: change both together), not a
// measurement; the allocator's rounding and the thread stacks are not in it.
struct TrainPassBytes {
  int64_t saved = 0;    // what the forward keeps for the backward
  int64_t scratch = 0;  // the backward's and the LM head's working buffers
  int64_t total() const { return saved + scratch; }
};
TrainPassBytes train_pass_bytes(const LlamaConfig& config, int64_t B, int64_t T, int64_t adapter_rank, bool full,
                                int threads);
// The bytes the float buffers of every TrainPass in the process hold now (what
// train_pass_bytes estimates; its test compares the two).
int64_t train_pass_bytes_held();

class TrainPass {
 public:
  // config: the model's. grads: full fine-tuning's gradients (null: base
  // frozen). adapter: the trained adapter's values and where its gradients
  // go (model/adapter_exec.h; adapters/exec.h makes it from an Adapter and
  // its gradient Adapter), null: no adapter. max_rows: the most rows (B T) a batch
  // will have. Input gradients (dx = dy W) read the weights where they are
  // (ops::matmul_cols), so the pass keeps no copy of them and sees the
  // updates of full fine-tuning as they happen. Everything given must outlive
  // the pass.
  TrainPass(const LlamaConfig& config, ThreadPool& pool, const WeightsView& weights, const TrainGrads* grads,
            const AdapterTrainView* adapter, int64_t max_rows);
  ~TrainPass();
  TrainPass(const TrainPass&) = delete;
  TrainPass& operator=(const TrainPass&) = delete;

  // Adapter dropout on the inputs of A (as PEFT: y += s B A drop(u)), with a
  // mask that depends only on (seed, layer, target, row, column), so a resumed
  // run draws the same masks. 0 = off.
  void set_dropout(float p, uint64_t seed);

  // Forward over the batch; returns the sum of the cross-entropies of its
  // target positions (natural log). With backward, also runs the backward
  // pass with d loss / d logit scaled by grad_scale (1 / the target count of
  // the whole optimiser step gives the mean over that step, as Hugging Face's
  // loss) and accumulates the gradients. Results do not depend on how the
  // threads share the work (each value is computed by one thread in a fixed
  // order), so a resumed run repeats an uninterrupted one bit for bit.
  double run(const TrainBatch& batch, bool backward, float grad_scale);
  // (B) each sequence's summed cross-entropy from the last run(), its rows
  // added in order. A row's loss does not depend on the other rows of the batch
  // or on the padded length, so adding these in data order gives the same value
  // however the data was split into micro-batches.
  const std::vector<double>& sequence_losses() const;
  // With keep_logits, run() also keeps the logits (N, V) of every row.
  void keep_logits(bool keep);
  const std::vector<float>& logits() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace flora
