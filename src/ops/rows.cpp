#include "ops/rows.h"

#include <algorithm>

#include "ops/backward.h"
#include "util/error.h"

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

// A block-format product rounds its input to 8-bit groups, a BF16 product
// (when asked for) to bf16 (ops.h); products sharing an input round it once
// per thread, here, not once per chunk. At most two group sizes (32, 256)
// meet one input; a thread's buffers are kept (one RoundedInput at a time per
// thread: a region's hooks start no product).
class RoundedInput {
 public:
  RoundedInput(const float* x, int64_t ldx, int64_t T) : x_(x), ldx_(ldx), T_(T) {}
  const ActivationBlocks& operator()(const MatrixRef& w) {
    thread_local ActivationBlocks rounded[2];
    const int64_t group = activation_group(w.dtype);
    const int i = group == 32 ? 0 : 1;
    if (!done_[i]) round_activations(x_, ldx_, T_, w.cols, group, rounded[i]);
    done_[i] = true;
    return rounded[i];
  }
  const Bf16Activations& bf16(const MatrixRef& w) {
    thread_local Bf16Activations rounded;
    if (!bf16_done_) round_activations_bf16(x_, ldx_, T_, w.cols, rounded);
    bf16_done_ = true;
    return rounded;
  }

 private:
  const float* x_;
  int64_t ldx_, T_;
  bool done_[2] = {false, false};
  bool bf16_done_ = false;
};

// matmul_rows over x, through `rounded` when w is a block format or a BF16
// product takes bf16 activations.
void rows_of(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t T, RoundedInput& rounded, const MatrixRef& w,
             int64_t r0, int64_t r1, bool accumulate) {
  if (is_quantized(w.dtype))
    matmul_rows(y, ldy, rounded(w), w, r0, r1, accumulate);
  else if (bf16_products_active(w.dtype))
    matmul_rows(y, ldy, rounded.bf16(w), w, r0, r1, accumulate);
  else
    matmul_rows(y, ldy, x, ldx, T, w, r0, r1, accumulate);
}

}  // namespace

void product_region(ThreadPool& pool, const ProductRegion& g) {
  const int n = g.n_operands;
  // The stack's row offset of each operand (stacked), or the common row count.
  std::array<int64_t, 4> offset{};
  for (int j = 0; j < n; ++j) offset[j + 1] = offset[j] + g.operands[j].w->rows;
  const int64_t rows = g.stacked ? offset[n] : g.operands[0].w->rows;
  WorkChunks chunks(rows, g.chunk), items(g.items, 1);
  pool.run([&](int t, int) {
    const float* x = g.input(t);
    if (g.before) g.before(t, x);
    RoundedInput rounded(x, g.ldx, g.T);
    int64_t c0, c1;
    while (chunks.next(c0, c1)) {
      for (int j = 0; j < n; ++j) {
        const ProductOperand& o = g.operands[j];
        // The chunk's rows of operand j: all of [c0, c1), or (stacked) its part of the stack.
        const int64_t r0 = g.stacked ? std::max(c0, offset[j]) - offset[j] : c0;
        const int64_t r1 = g.stacked ? std::min(c1, offset[j + 1]) - offset[j] : c1;
        if (r0 >= r1) continue;
        rows_of(o.y, o.ldy, x, g.ldx, g.T, rounded, *o.w, r0, r1, o.accumulate);
        if (g.epilogue) g.epilogue(t, j, r0, r1);
      }
      if (g.chunk_done) g.chunk_done(t, c0, c1);
    }
    int64_t i0, i1;
    while (items.next(i0, i1))
      for (int64_t i = i0; i < i1; ++i) g.item(t, i, x);
    if (g.after) g.after(t);
  });
}

void for_chunks(ThreadPool& pool, int64_t n, int64_t chunk,
                const std::function<void(int t, int64_t c0, int64_t c1)>& body) {
  WorkChunks chunks(n, chunk);
  pool.run([&](int t, int) {
    int64_t c0, c1;
    while (chunks.next(c0, c1)) body(t, c0, c1);
  });
}

void attention_rows(ThreadPool& pool, float* out, int64_t ld_out, const float* q, int64_t ld_q,
                    const std::vector<AttentionSegment>& segments, int64_t heads, int64_t kv_heads, int64_t hd,
                    float* scratch, int64_t max_keys) {
  // Item w of segment s is (head, block) = (w / blocks, w % blocks) after the segment's first item.
  std::vector<int64_t> first(segments.size() + 1, 0);
  for (size_t s = 0; s < segments.size(); ++s) {
    FLORA_ASSERT(segments[s].p0 + segments[s].n <= max_keys);
    first[s + 1] = first[s] + heads * ((segments[s].n + kAttentionBlock - 1) / kAttentionBlock);
  }
  const int64_t group = heads / kv_heads;
  WorkChunks items(first.back(), 1);
  pool.run([&](int t, int) {
    int64_t w0, w1;
    size_t s = 0;
    while (items.next(w0, w1))
      for (int64_t w = w0; w < w1; ++w) {
        while (first[s + 1] <= w) ++s;  // a thread's items come in increasing order
        const AttentionSegment& g = segments[s];
        const int64_t blocks = (g.n + kAttentionBlock - 1) / kAttentionBlock, local = w - first[s];
        const int64_t h = local / blocks, i0 = (local % blocks) * kAttentionBlock;
        const int64_t tq = std::min(kAttentionBlock, g.n - i0), kv_off = (h / group) * hd, row = g.row0 + i0;
        attention_block(out + row * ld_out + h * hd, ld_out, scratch + static_cast<int64_t>(t) * kAttentionBlock * max_keys,
                        max_keys, q + row * ld_q + h * hd, ld_q, tq, g.k + kv_off, g.v + kv_off, g.ld_kv, g.p0 + i0, hd);
      }
  });
}

int64_t attention_rows_backward_floats(int64_t T, int64_t hd) { return T * T + attention_scratch_floats(T, hd); }

void attention_rows_backward(ThreadPool& pool, float* dqkv, const float* dout, int64_t ld_out, const float* qkv,
                             int64_t ld, int64_t B, int64_t T, int64_t heads, int64_t kv_heads, int64_t hd,
                             float* scratch) {
  const int64_t group = heads / kv_heads, qd = heads * hd, kvd = kv_heads * hd;
  const int64_t per_thread = attention_rows_backward_floats(T, hd);
  for_chunks(pool, B * kv_heads, 1, [&](int t, int64_t i0, int64_t i1) {
    float* P = scratch + t * per_thread;  // (T, T) the head's probabilities
    float* rest = P + T * T;              // attention_backward's own scratch
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / kv_heads, g = i % kv_heads;
      const float* base = qkv + b * T * ld;
      float* dbase = dqkv + b * T * ld;
      for (int64_t h = g * group; h < (g + 1) * group; ++h) {
        attention_probabilities(P, T, base + h * hd, ld, T, base + qd + g * hd, ld, 0, hd);
        attention_backward(dbase + h * hd, dbase + qd + g * hd, dbase + qd + kvd + g * hd,
                           dout + b * T * ld_out + h * hd, ld_out, P, base + h * hd, ld, base + qd + g * hd,
                           base + qd + kvd + g * hd, ld, T, hd, rest);
      }
    }
  });
}

void cross_entropy_rows(ThreadPool& pool, double* loss, float* logits, const int32_t* targets, int64_t n, int64_t V,
                        bool backward, float grad_scale) {
  for_chunks(pool, n, 1, [&](int, int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      float* row = logits + i * V;
      if (targets[i] < 0) {
        loss[i] = 0;
        if (backward) std::fill(row, row + V, 0.0f);
      } else {
        loss[i] = backward ? cross_entropy_forward_backward(row, V, targets[i], grad_scale)
                           : cross_entropy_forward(row, V, targets[i]);
      }
    }
  });
}

void embedding_backward(ThreadPool& pool, float* dE, const int32_t* tokens, const float* dx, int64_t n, int64_t d) {
  for_chunks(pool, (d + 63) / 64, 1, [&](int, int64_t b0, int64_t b1) {
    for (int64_t t = 0; t < n; ++t)
      for (int64_t j = b0 * 64; j < std::min(d, b1 * 64); ++j) dE[tokens[t] * d + j] += dx[t * d + j];
  });
}

void product(ThreadPool& pool, float* y, int64_t ldy, const float* x, int64_t ldx, int64_t n, const MatrixRef& W,
             bool accumulate) {
  WorkChunks rows(W.rows, kRowChunk);
  pool.run([&](int, int) {
    RoundedInput rounded(x, ldx, n);
    int64_t r0, r1;
    while (rows.next(r0, r1)) rows_of(y, ldy, x, ldx, n, rounded, W, r0, r1, accumulate);
  });
}

// Each element is one chain over W's rows (matmul_cols), so the chunking changes no bit.
void product_t(ThreadPool& pool, float* y, int64_t ldy, const float* x, int64_t ldx, int64_t n, const MatrixRef& W,
               bool accumulate) {
  const bool wide = W.cols >= 2 * (2 * kColChunk) * pool.size();  // two wide chunks per thread
  WorkChunks cols(W.cols, wide ? 2 * kColChunk : kColChunk);
  if (bf16_products_active(W.dtype)) {  // x rounded to bf16 once, the threads taking row ranges
    thread_local Bf16Activations kept;  // the calling thread's, kept between calls
    Bf16Activations& rounded = kept;    // (a lambda naming `kept` would reach each worker's own)
    size_activations_bf16(n, W.rows, rounded);
    WorkChunks row_chunks(n, kRows);
    pool.run([&](int, int) {
      int64_t t0, t1;
      while (row_chunks.next(t0, t1)) round_activations_bf16_rows(x, ldx, t0, t1, rounded);
    });
    pool.run([&](int, int) {
      int64_t c0, c1;
      while (cols.next(c0, c1)) matmul_cols(y, ldy, rounded, W, c0, c1, accumulate);
    });
    return;
  }
  pool.run([&](int, int) {
    int64_t c0, c1;
    while (cols.next(c0, c1)) matmul_cols(y, ldy, x, ldx, n, W, c0, c1, accumulate);
  });
}

namespace {
// weight_grad's tiles of dW: rows of dy^T (the product's tokens) by columns of x.
constexpr int64_t kGradRows = 64, kGradCols = 2 * kColChunk;
// The narrow form (dW^T = x^T dy, added transposed) moves fewer floats when dW
// has few columns (a LoRA B's rank): it transposes x and the (K, M) result
// instead of dy.
bool narrow_weight_grad(int64_t M, int64_t K, int64_t n) { return K * n + K * M < M * n; }

// out (cols, rows) = scale in^T of in (rows, cols) with row stride ld, by blocks of 64 columns.
void transpose_scaled(ThreadPool& pool, float* out, const float* in, int64_t rows, int64_t cols, int64_t ld,
                      float scale) {
  WorkChunks blocks((cols + 63) / 64, 1);
  pool.run([&](int, int) {
    int64_t b0, b1;
    while (blocks.next(b0, b1)) {
      const int64_t c0 = b0 * 64, c1 = std::min(cols, b1 * 64);
      transpose(out + c0 * rows, in + c0, rows, c1 - c0, ld);
      if (scale != 1.0f)
        for (int64_t i = c0 * rows; i < c1 * rows; ++i) out[i] *= scale;
    }
  });
}
}  // namespace

int64_t weight_grad_scratch_floats(int64_t M, int64_t K, int64_t n, int threads) {
  return narrow_weight_grad(M, K, n) ? K * n + K * M : M * n + threads * kGradRows * kGradCols;
}

void weight_grad(ThreadPool& pool, float* dW, const float* dy, int64_t ldy, int64_t M, const float* x, int64_t ldx,
                 int64_t K, int64_t n, float scale, float* scratch) {
  if (narrow_weight_grad(M, K, n)) {
    float* xT = scratch;           // (K, n), scaled
    float* dWT = scratch + K * n;  // (K, M)
    transpose_scaled(pool, xT, x, n, K, ldx, scale);
    product_t(pool, dWT, M, xT, n, K, MatrixRef{dy, DType::F32, n, M, ldy}, false);
    WorkChunks blocks((M + 63) / 64, 1);
    pool.run([&](int, int) {
      int64_t b0, b1;
      while (blocks.next(b0, b1)) {
        const int64_t m0 = b0 * 64, m1 = std::min(M, b1 * 64);
        transpose_add(dW + m0 * K, K, dWT + m0, K, m1 - m0, M);
      }
    });
    return;
  }
  float* dyT = scratch;  // (M, n), scaled
  transpose_scaled(pool, dyT, dy, n, M, ldy, scale);
  const int64_t col_blocks = (K + kGradCols - 1) / kGradCols;
  WorkChunks tiles((M + kGradRows - 1) / kGradRows * col_blocks, 1);
  pool.run([&](int thread, int) {
    float* tile = scratch + M * n + thread * kGradRows * kGradCols;  // (kGradRows, kGradCols)
    int64_t i0, i1;
    while (tiles.next(i0, i1)) {
      const int64_t m0 = i0 / col_blocks * kGradRows, c0 = i0 % col_blocks * kGradCols;
      const int64_t rows = std::min(kGradRows, M - m0), cols = std::min(kGradCols, K - c0);
      matmul_cols(tile, kGradCols, dyT + m0 * n, n, rows, MatrixRef{x + c0, DType::F32, n, cols, ldx}, 0, cols,
                  false);
      for (int64_t m = 0; m < rows; ++m)
        for (int64_t c = 0; c < cols; ++c) dW[(m0 + m) * K + c0 + c] += tile[m * kGradCols + c];
    }
  });
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
