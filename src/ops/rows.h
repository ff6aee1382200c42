// Whole operations over all the rows of a pass, for the CPU: each runs as one
// parallel region of the pool (one synchronisation point) and splits its work
// over the threads itself, so the model code says what to compute, not how
// threads share it. Each value is computed by one thread in a fixed order that
// does not depend on the thread count (the products' guarantees are in ops.h),
// so results are the same, bit for bit, with any pool (tests/test_rows.cpp
// checks each against the per-slice ops it is built from, with 1-3 threads).
//
// The forward pass (model/forward.cpp) runs its layers through
// product_region (a product with the model's and the adapters' work at fixed
// points of each thread's share), attention_rows and for_chunks; the training
// backward (model/train_pass.cpp) through the plain operations below them.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <vector>

#include "ops/ops.h"
#include "util/threads.h"

namespace flora::ops {

// One product of the forward with what rides on it, as one parallel region:
// y_j (=|+=) x W_j^T for up to three matrices sharing the input x (T rows),
// threads taking chunks of output rows, and the caller's work at fixed points
// of each thread's share. The hooks say what to compute; this op how the
// threads share it (a CPU backend's choice: one region, chunks on demand).
//   stacked: the chunks run over the stacked rows [W_0; W_1; W_2] in whole
//     multiples of `chunk` rows (q|k|v by attention heads), so a chunk may
//     span two matrices; else every W_j has the same rows and a chunk covers
//     those rows of each (gate and up, so SwiGLU can run on the chunk).
struct ProductOperand {
  const MatrixRef* w = nullptr;
  float* y = nullptr;  // (T, *) row stride ldy, written at columns [r0, r1) for W's rows [r0, r1)
  int64_t ldy = 0;
  bool accumulate = false;
};
struct ProductRegion {
  int64_t T = 0;
  std::array<ProductOperand, 3> operands;
  int n_operands = 1;
  bool stacked = false;
  int64_t chunk = 64;  // output rows (stacked: of the stack) per chunk
  int64_t ldx = 0;
  // Every thread first: the input it reads (it may form its own copy, e.g. a
  // norm), then its work before the chunks.
  std::function<const float*(int t)> input;
  std::function<void(int t, const float* x)> before;
  // Rows [r0, r1) of operand j are written: the work that rides on them.
  std::function<void(int t, int j, int64_t r0, int64_t r1)> epilogue;
  // Every operand's rows of chunk [c0, c1) (stack rows when stacked) are final.
  std::function<void(int t, int64_t c0, int64_t c1)> chunk_done;
  // Work items of the caller's own, shared over the threads after the chunks.
  int64_t items = 0;
  std::function<void(int t, int64_t item, const float* x)> item;
  // Every thread last.
  std::function<void(int t)> after;
};
void product_region(ThreadPool& pool, const ProductRegion& region);

// body(t, c0, c1) over [0, n) in chunks of `chunk`, shared over the threads: one region.
void for_chunks(ThreadPool& pool, int64_t n, int64_t chunk,
                const std::function<void(int t, int64_t c0, int64_t c1)>& body);

// Causal grouped-query attention of every row of a pass, one region. A
// segment is one sequence's rows [row0, row0 + n) of the pass, the first at
// position p0; its keys and values (p0 + n positions, row stride ld_kv, KV
// head g at column g hd) are the KV cache, or the pass's own rows. Work items
// are (segment, query head, block of up to kAttentionBlock queries), each
// ops::attention_block, its scores in scratch (threads, kAttentionBlock,
// max_keys), max_keys >= every segment's p0 + n. q (rows, heads hd) row stride
// ld_q; out (rows, heads hd) row stride ld_out.
struct AttentionSegment {
  int64_t row0 = 0, n = 0, p0 = 0;
  const float* k = nullptr;
  const float* v = nullptr;
  int64_t ld_kv = 0;
};
constexpr int64_t kAttentionBlock = 16;
void attention_rows(ThreadPool& pool, float* out, int64_t ld_out, const float* q, int64_t ld_q,
                    const std::vector<AttentionSegment>& segments, int64_t heads, int64_t kv_heads, int64_t hd,
                    float* scratch, int64_t max_keys);

// The backward of attention_rows over B sequences of T rows, each from
// position 0 with its keys and values its own rows: dq, dk, dv += the
// gradients, per (sequence, KV head) so that the query heads of a group add
// into their shared dk, dv in a fixed order. Each head's probabilities are
// recomputed from q and k (attention_probabilities: the forward's, bit for
// bit), one (T, T) at a time per thread, not saved by the forward: at 512
// tokens that is 537 MB less for Llama-3.2-1B's 16 layers. qkv and dqkv:
// (B T, heads hd | kv_heads hd | kv_heads hd) row stride ld; dout (B T, heads
// hd) row stride ld_out. scratch: threads x attention_rows_backward_floats(T, hd).
void attention_rows_backward(ThreadPool& pool, float* dqkv, const float* dout, int64_t ld_out, const float* qkv,
                             int64_t ld, int64_t B, int64_t T, int64_t heads, int64_t kv_heads, int64_t hd,
                             float* scratch);
int64_t attention_rows_backward_floats(int64_t T, int64_t hd);

// The cross-entropy of each of n rows of logits (n, V) against its target
// (targets[i] < 0: no loss, 0): loss[i] (n). backward: each row overwritten by
// d loss / d logits * grad_scale (zeros without a target), as
// cross_entropy_forward_backward; else left as it is.
void cross_entropy_rows(ThreadPool& pool, double* loss, float* logits, const int32_t* targets, int64_t n, int64_t V,
                        bool backward, float grad_scale);

// The backward of the embedding rows x[t] = E[tokens[t]]: dE[tokens[t]] += dx[t],
// by column blocks, rows in order. dE (V, d); dx (n, d).
void embedding_backward(ThreadPool& pool, float* dE, const int32_t* tokens, const float* dx, int64_t n, int64_t d);

// y (n, W.rows) (=|+=) x (n, W.cols) W^T, threads taking chunks of W's rows.
void product(ThreadPool& pool, float* y, int64_t ldy, const float* x, int64_t ldx, int64_t n, const MatrixRef& W,
             bool accumulate);

// y (n, W.cols) (=|+=) x (n, W.rows) W, threads taking chunks of W's columns:
// the input gradient dx = dy W of a product y = x W^T, read from W as stored.
void product_t(ThreadPool& pool, float* y, int64_t ldy, const float* x, int64_t ldx, int64_t n, const MatrixRef& W,
               bool accumulate);

// dW (M, K) += scale dy^T x with dy (n, M) row stride ldy, x (n, K) row stride
// ldx. Each element of dW gets one addition: its sum over the n rows is formed
// from zero (one matmul_cols chain over the rows, in order), then added, so the
// bits do not depend on the threads, and accumulating micro-batches in place
// is the fold of their gradients (data parallelism relies on it). dy^T scaled
// goes to scratch and tiles of dy^T x are added; where dW has few columns
// (a LoRA B), x^T scaled and dW^T = x^T dy instead, added transposed.
// scratch: weight_grad_scratch_floats(M, K, n, pool.size()) floats.
void weight_grad(ThreadPool& pool, float* dW, const float* dy, int64_t ldy, int64_t M, const float* x, int64_t ldx,
                 int64_t K, int64_t n, float scale, float* scratch);
int64_t weight_grad_scratch_floats(int64_t M, int64_t K, int64_t n, int threads);

// out (n, d) = RMSNorm of each row of x (n, d) with weight w (d); rstd (n) saved.
void rmsnorm_rows(ThreadPool& pool, float* out, float* rstd, const float* x, const float* w, int64_t n, int64_t d,
                  float eps);
// dx (n, d) += through RMSNorm; dw (d) += (a trained norm weight, else null),
// summed over rows in row order by column blocks.
void rmsnorm_rows_backward(ThreadPool& pool, float* dx, float* dw, const float* dout, const float* x, const float* w,
                           const float* rstd, int64_t n, int64_t d);

// RoPE on the first `heads` head vectors (head_dim each) of every row of v
// (n, *) row stride ld, row t at position t mod T; cos, sin: (T, head_dim / 2).
// backward: the transposed rotation, on a gradient.
void rope_rows(ThreadPool& pool, float* v, int64_t ld, int64_t n, int64_t heads, int64_t head_dim, const float* cos,
               const float* sin, int64_t T, bool backward);

// h = silu(g) * u over n rows of f; and its backward (dg, du overwritten).
void swiglu_rows(ThreadPool& pool, float* h, const float* g, const float* u, int64_t n, int64_t f);
void swiglu_rows_backward(ThreadPool& pool, float* dg, float* du, const float* dh, const float* g, const float* u,
                          int64_t n, int64_t f);

}  // namespace flora::ops
