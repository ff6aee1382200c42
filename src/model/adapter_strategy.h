// How an adapter executes inside the forward pass: one strategy class per
// AdapterMode, behind the few hooks the products of a layer offer. The forward
// (model/forward.cpp) owns the parallel regions, the base products and what
// consumes their outputs (RoPE and the KV cache, SwiGLU, the residual stream);
// a strategy adds its adapter's terms to the rows that run it:
//
//   FLoRA fused         before_chunks (the low-rank z of the site, by every
//                       thread) and an epilogue in each output chunk: no region
//                       of its own, so no synchronisation point.
//   LoRA partially fused  its A products as extra work items of the product's
//                       region, its B products in a follow-up region.
//   LoRA unfused        two regions of its own per adapted projection (A, then
//                       B with the scaled add), as PEFT and llama.cpp run it.
//
// One pass can hold rows of several adapters: each distinct adapter of a call
// gets its own strategy object, which sees only its runs of rows (AdapterRows).
// A row's terms depend on nothing but that row, so a row gets the same values
// whatever the other rows of the call run.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "model/adapter_exec.h"
#include "util/threads.h"

namespace flora {

// A place in a layer where adapter work rides on the base products: the
// attention entry (q|k|v), the o exit, the FFN entry (gate|up), the down exit.
// Entries share one input u (the normalised residual); exits add to it.
struct Site {
  int sub_block;  // 0 attention, 1 FFN: FLoRA sums z within one
  bool exit;
  std::array<Target, 3> targets;
  int n_targets;
};
inline constexpr Site kAttentionEntry{0, false, {Target::Q, Target::K, Target::V}, 3};
inline constexpr Site kAttentionExit{0, true, {Target::O, Target::O, Target::O}, 1};
inline constexpr Site kFfnEntry{1, false, {Target::Gate, Target::Up, Target::Up}, 2};
inline constexpr Site kFfnExit{1, true, {Target::Down, Target::Down, Target::Down}, 1};

// Consecutive rows [row0, row0 + n) of a call that run one adapter at one scale.
struct AdapterRows {
  int64_t row0 = 0, n = 0;
  float scale = 1;
};

// Output rows per chunk of work in a product: a multiple of the register block
// (4 rows) and of a 64-byte line of f32 outputs. Decode chunks of 64 rows read
// 256 KiB of a 2048-wide BF16 matrix: small enough to balance threads, large
// enough that taking a chunk costs nothing. Prefill chunks are larger because
// each one streams the whole (T, K) input once more.
inline int64_t product_row_chunk(int64_t T) { return T == 1 ? 64 : 256; }

// An output of a site's product: target j of the site writes rows of y, (T, *)
// with row stride ldy (target m's first output column at y).
struct SiteOutput {
  float* y;
  int64_t ldy;
};

// The input of a site: u (T, *) row stride ld, the shared input of the site's
// products, and the input of each target j's A product: u itself, or (the
// training forward with adapter dropout) u under target j's mask, a_ld its stride.
struct SiteInput {
  const float* u;
  int64_t ld;
  std::array<const float*, 3> a_u;
  int64_t a_ld;
};

// What the training backward reads of an adapter's forward in one layer
// (model/train_pass.cpp), written by the strategy when the forward saves
// (Forward::forward_train); rows in call order, null where not needed.
struct AdapterActivations {
  std::array<float*, kTargets> z{};   // (rows, r) LoRA: A_m drop(u), before the scale
  std::array<float*, 2> zsum{}, p{};  // (rows, r) FLoRA, per sub-block: z before phi, and p = phi(z)
};

// Adapter dropout of training (PEFT's lora_dropout on the inputs of A): the
// mask of element (row, col) of target m's input in layer l depends only on
// (seed, l, m, row, col), so a resumed run draws the same masks, and the
// forward, which drops the inputs, and the backward, which masks their
// gradients, agree without storing the masks.
struct AdapterDropout {
  float p = 0;  // 0: off
  uint64_t seed = 0;
  bool keep(int64_t layer, Target m, int64_t row, int64_t col) const;
  // out (n, n_in) dense = u (n, n_in) row stride ld_u, times mask / (1 - p), in parallel over rows.
  void apply(ThreadPool& pool, float* out, const float* u, int64_t ld_u, int64_t n, int64_t n_in, int64_t layer,
             Target m) const;
  // Its transpose on a gradient: du (n, n_in) += g (n, n_in) * mask / (1 - p) (du += g when off).
  void add_masked(ThreadPool& pool, float* du, const float* g, int64_t n, int64_t n_in, int64_t layer, Target m) const;
};

class AdapterStrategy {
 public:
  virtual ~AdapterStrategy() = default;

  // A new call: `exec` on `runs` (in row order), `threads` the pool's size.
  // Sizes the strategy's buffers (kept across calls).
  void begin(const AdapterExec& exec, std::vector<AdapterRows> runs, int threads);
  const AdapterExec& exec() const { return *exec_; }
  // Where the next layer's activations go for the backward (null: not saved).
  void save_to(const AdapterActivations* saved) { saved_ = saved; }

  // In the site's product region, every thread t, after the site's input (the
  // call's T rows) is ready and before its output chunks.
  virtual void before_chunks(int t, int64_t layer, const Site& site, const SiteInput& in) {}
  // In each output chunk: rows [r0, r1) of target j of the site are written.
  virtual void epilogue(int t, int64_t layer, const Site& site, int j, SiteOutput out, int64_t r0, int64_t r1) {}
  // Work items of the strategy's own in the product's region, shared over the
  // threads like output chunks (partially fused LoRA: the A products).
  virtual int64_t region_items(const Site& site) const { return 0; }
  virtual void region_item(int t, int64_t layer, const Site& site, int64_t item, const SiteInput& in) {}
  // In the product region, every thread, after its chunks and items.
  virtual void after_chunks(int t, int64_t layer, const Site& site) {}

  // True when the outputs of the site are not final at the end of its product
  // region: its consumer (RoPE, SwiGLU) then waits for a follow-up region.
  virtual bool defers(const Site& site) const { return false; }
  // Regions of the strategy's own after the product region (unfused LoRA).
  virtual void extra_regions(ThreadPool& pool, int64_t layer, const Site& site, const SiteInput& in,
                             const SiteOutput* outs) {}
  // True when the strategy works in the site's follow-up region (late_epilogue).
  virtual bool needs_follow_up(const Site& site) const { return false; }
  virtual void late_epilogue(int t, int64_t layer, const Site& site, int j, SiteOutput out, int64_t r0, int64_t r1) {}

 protected:
  int64_t rank() const { return exec_->rank; }
  // Row offset of run i in the strategy's packed (rows, r) buffers.
  int64_t packed_row(size_t i) const { return packed_row_[i]; }
  int64_t packed_rows() const { return packed_rows_; }
  // Grows v to hold at least n floats (buffers keep their memory across calls).
  static void fit(std::vector<float>& v, size_t n) {
    if (v.size() < n) v.resize(n);
  }
  // Called by begin() once the runs are known.
  virtual void prepare(int threads) = 0;

  const AdapterExec* exec_ = nullptr;
  std::vector<AdapterRows> runs_;
  const AdapterActivations* saved_ = nullptr;

 private:
  std::vector<int64_t> packed_row_;
  int64_t packed_rows_ = 0;
};

std::unique_ptr<AdapterStrategy> make_adapter_strategy(AdapterMode mode);

}  // namespace flora
