// Whole operations over all the rows of a pass, for the CPU: each runs as one
// parallel region of the pool (one synchronisation point) and splits its work
// over the threads itself, so the model code says what to compute, not how
// threads share it. Each value is computed by one thread in a fixed order that
// does not depend on the thread count (the products' guarantees are in ops.h),
// so results are the same, bit for bit, with any pool.
//
// Used by the training pass (model/train_pass.cpp). The forward pass
// (model/forward.cpp) still runs its own fused regions, a product with the
// adapters' epilogues inside each output chunk; see docs/architecture.md.
#pragma once
#include <cstdint>

#include "ops/ops.h"
#include "util/threads.h"

namespace flora::ops {

// y (n, W.rows) (=|+=) x (n, W.cols) W^T, threads taking chunks of W's rows.
void product(ThreadPool& pool, float* y, int64_t ldy, const float* x, int64_t ldx, int64_t n, const MatrixRef& W,
             bool accumulate);

// y (n, W.cols) (=|+=) x (n, W.rows) W, threads taking chunks of W's columns:
// the input gradient dx = dy W of a product y = x W^T, read from W as stored.
void product_t(ThreadPool& pool, float* y, int64_t ldy, const float* x, int64_t ldx, int64_t n, const MatrixRef& W,
               bool accumulate);

// dW (M, K) += scale dy^T x with dy (n, M) row stride ldy, x (n, K) row stride
// ldx: both transposed into scratch_a (M n floats) and scratch_b (K n), then
// one product whose "tokens" are the M rows of dy^T and whose weight rows are
// x^T's K rows. Two regions.
void weight_grad(ThreadPool& pool, float* dW, const float* dy, int64_t ldy, int64_t M, const float* x, int64_t ldx,
                 int64_t K, int64_t n, float scale, float* scratch_a, float* scratch_b);

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
