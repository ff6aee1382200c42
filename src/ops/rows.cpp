#include "ops/rows.h"

#include <algorithm>

#include "ops/backward.h"

namespace flora::ops {

namespace {

// Output rows per chunk of a product: a multiple of the 4-row register block.
constexpr int64_t kRowChunk = 64;
// Output columns per chunk of a transposed product: a multiple of every
// vector width times matmul_cols' column vectors per register block. Each
// chunk reads all of x, so chunks are twice that where there are enough for
// every thread (the LM head's input gradient, x (64, 128256), ran 1.4x faster
// at 128 columns than at 64).
constexpr int64_t kColChunk = 64;
// Rows per chunk of the row-wise operations (norms, RoPE, SwiGLU).
constexpr int64_t kRows = 8;

}  // namespace

void product(ThreadPool& pool, float* y, int64_t ldy, const float* x, int64_t ldx, int64_t n, const MatrixRef& W,
             bool accumulate) {
  WorkChunks rows(W.rows, kRowChunk);
  pool.run([&](int, int) {
    int64_t r0, r1;
    while (rows.next(r0, r1)) matmul_rows(y, ldy, x, ldx, n, W, r0, r1, accumulate);
  });
}

// Each element is one chain over W's rows (matmul_cols), so the chunking changes no bit.
void product_t(ThreadPool& pool, float* y, int64_t ldy, const float* x, int64_t ldx, int64_t n, const MatrixRef& W,
               bool accumulate) {
  const bool wide = W.cols >= 2 * (2 * kColChunk) * pool.size();  // two wide chunks per thread
  WorkChunks cols(W.cols, wide ? 2 * kColChunk : kColChunk);
  pool.run([&](int, int) {
    int64_t c0, c1;
    while (cols.next(c0, c1)) matmul_cols(y, ldy, x, ldx, n, W, c0, c1, accumulate);
  });
}

void weight_grad(ThreadPool& pool, float* dW, const float* dy, int64_t ldy, int64_t M, const float* x, int64_t ldx,
                 int64_t K, int64_t n, float scale, float* scratch_a, float* scratch_b) {
  // Column blocks of dy and x become row blocks of the transposes (tiled in ops::transpose).
  WorkChunks ca((M + 63) / 64, 1), cb((K + 63) / 64, 1);
  pool.run([&](int, int) {
    int64_t b0, b1;
    while (ca.next(b0, b1)) {
      const int64_t c0 = b0 * 64, c1 = std::min(M, b1 * 64);
      transpose(scratch_a + c0 * n, dy + c0, n, c1 - c0, ldy);
      if (scale != 1.0f)
        for (int64_t i = c0 * n; i < c1 * n; ++i) scratch_a[i] *= scale;
    }
    while (cb.next(b0, b1)) {
      const int64_t c0 = b0 * 64, c1 = std::min(K, b1 * 64);
      transpose(scratch_b + c0 * n, x + c0, n, c1 - c0, ldx);
    }
  });
  product(pool, dW, K, scratch_a, n, M, MatrixRef{scratch_b, DType::F32, K, n, 0}, true);
}

void rmsnorm_rows(ThreadPool& pool, float* out, float* rstd, const float* x, const float* w, int64_t n, int64_t d,
                  float eps) {
  WorkChunks rows(n, kRows);
  pool.run([&](int, int) {
    int64_t t0, t1;
    while (rows.next(t0, t1))
      for (int64_t t = t0; t < t1; ++t) rstd[t] = rmsnorm(out + t * d, x + t * d, w, d, eps);
  });
}

// dw's sum runs over rows in row order by column blocks, so it does not depend on the threads.
void rmsnorm_rows_backward(ThreadPool& pool, float* dx, float* dw, const float* dout, const float* x, const float* w,
                           const float* rstd, int64_t n, int64_t d) {
  WorkChunks rows(n, kRows), cols((d + 63) / 64, 1);
  pool.run([&](int, int) {
    int64_t t0, t1;
    while (rows.next(t0, t1))
      for (int64_t t = t0; t < t1; ++t) rmsnorm_backward(dx + t * d, nullptr, dout + t * d, x + t * d, w, rstd[t], d);
    if (!dw) return;
    int64_t b0, b1;
    while (cols.next(b0, b1))
      for (int64_t t = 0; t < n; ++t)
        for (int64_t j = b0 * 64; j < std::min(d, b1 * 64); ++j) dw[j] += dout[t * d + j] * x[t * d + j] * rstd[t];
  });
}

void rope_rows(ThreadPool& pool, float* v, int64_t ld, int64_t n, int64_t heads, int64_t head_dim, const float* cos,
               const float* sin, int64_t T, bool backward) {
  const int64_t half = head_dim / 2;
  WorkChunks rows(n, kRows);
  pool.run([&](int, int) {
    int64_t t0, t1;
    while (rows.next(t0, t1))
      for (int64_t t = t0; t < t1; ++t) {
        const float* c = cos + (t % T) * half;
        const float* s = sin + (t % T) * half;
        for (int64_t h = 0; h < heads; ++h)
          (backward ? rope_backward : rope_forward)(v + t * ld + h * head_dim, c, s, head_dim);
      }
  });
}

void swiglu_rows(ThreadPool& pool, float* h, const float* g, const float* u, int64_t n, int64_t f) {
  WorkChunks rows(n, kRows);
  pool.run([&](int, int) {
    int64_t t0, t1;
    while (rows.next(t0, t1))
      for (int64_t t = t0; t < t1; ++t) swiglu_forward(h + t * f, g + t * f, u + t * f, f);
  });
}

void swiglu_rows_backward(ThreadPool& pool, float* dg, float* du, const float* dh, const float* g, const float* u,
                          int64_t n, int64_t f) {
  WorkChunks rows(n, kRows);
  pool.run([&](int, int) {
    int64_t t0, t1;
    while (rows.next(t0, t1))
      for (int64_t t = t0; t < t1; ++t) swiglu_backward(dg + t * f, du + t * f, dh + t * f, g + t * f, u + t * f, f);
  });
}

}  // namespace flora::ops
