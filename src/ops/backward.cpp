// The training ops of backward.h: plain scalar loops for the elementwise and
// row ops (they are O(n) beside the O(n d) products), ops::matmul_rows and
// ops::matmul_cols for every product of the attention, so the T x T work runs
// on the SIMD kernels.
#include "ops/backward.h"

#include <algorithm>
#include <cmath>

#include "ops/ops.h"
#include "util/error.h"

namespace flora::ops {

namespace {

// Causal attention works on blocks of this many rows: a block of queries needs
// the keys up to its last query only, so the products skip the upper triangle
// except for the block's own diagonal tile (~ kCausalBlock / T of the work,
// 6% at T = 512). A multiple of the kernel's 4 x 4 register block.
constexpr int64_t kCausalBlock = 32;

// Key columns per transposed product of the backward (dK, dV): the
// transposed kernel's 4-vector register block at AVX-512's 16 lanes.
constexpr int64_t kKeyBlock = 64;

// Transposes go through tiles of this side so that both the reads and the
// writes stay within a few cache lines per row.
constexpr int64_t kTransposeTile = 32;

// A dense F32 matrix (rows, cols) with row stride `stride`, as the weight
// operand of matmul_rows.
MatrixRef f32_matrix(const float* data, int64_t rows, int64_t cols, int64_t stride) {
  return MatrixRef{data, DType::F32, rows, cols, stride};
}

}  // namespace

void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, float rstd, int64_t n) {
  // out_i = x_i r w_i with r = (mean(x^2) + eps)^(-1/2), dr/dx_j = -r^3 x_j / n, so
  // dx_j = r w_j dout_j - x_j (r^3 / n) sum_i dout_i w_i x_i.
  double dot = 0;
  for (int64_t i = 0; i < n; ++i) dot += double(dout[i]) * double(w[i]) * double(x[i]);
  const float c = float(double(rstd) * double(rstd) * double(rstd) * dot / double(n));
  for (int64_t i = 0; i < n; ++i) dx[i] += rstd * w[i] * dout[i] - c * x[i];
  if (dw)
    for (int64_t i = 0; i < n; ++i) dw[i] += dout[i] * x[i] * rstd;
}

void rope_forward(float* v, const float* cos, const float* sin, int64_t head_dim) {
  const int64_t half = head_dim / 2;
  for (int64_t j = 0; j < half; ++j) {
    const float a = v[j], b = v[j + half];
    v[j] = a * cos[j] - b * sin[j];
    v[j + half] = b * cos[j] + a * sin[j];
  }
}

void rope_backward(float* dv, const float* cos, const float* sin, int64_t head_dim) {
  // The forward's pair map is [[c, -s], [s, c]]; its transpose is [[c, s], [-s, c]].
  const int64_t half = head_dim / 2;
  for (int64_t j = 0; j < half; ++j) {
    const float da = dv[j], db = dv[j + half];
    dv[j] = da * cos[j] + db * sin[j];
    dv[j + half] = db * cos[j] - da * sin[j];
  }
}

void swiglu_forward(float* h, const float* g, const float* u, int64_t n) {
  for (int64_t i = 0; i < n; ++i) h[i] = silu(g[i]) * u[i];
}

void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n) {
  // du uses the forward's own silu expression: it is the derivative of the h actually computed.
  for (int64_t i = 0; i < n; ++i) {
    const float dhi = dh[i];
    dg[i] = dhi * u[i] * silu_derivative(g[i]);
    du[i] = dhi * silu(g[i]);
  }
}

int64_t attention_scratch_floats(int64_t T, int64_t hd) {
  // dS (T, T); a transposed (T, hd) operand (K^T, Q^T, dO^T) (hd, T); dK^T, then dV^T (hd, T).
  return T * T + 2 * hd * T;
}

void attention_probabilities(float* S, int64_t ld_s, const float* q, int64_t ld_q, int64_t tq, const float* k,
                             int64_t ld_kv, int64_t p0, int64_t hd) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int64_t n = p0 + tq;  // the keys the block's last query sees
  // S = Q K^T, one product on the matrix kernel (each element a dot of hd, whatever tq and n).
  matmul_rows(S, ld_s, q, ld_q, tq, f32_matrix(k, n, hd, ld_kv), 0, n, false);
  for (int64_t i = 0; i < tq; ++i) {  // the causal softmax of row i over its p0 + i + 1 keys
    float* row = S + i * ld_s;
    const int64_t visible = p0 + i + 1;
    float mx = -INFINITY;
    for (int64_t p = 0; p < visible; ++p) mx = std::max(mx, row[p] *= scale);
    double sum = 0;
    for (int64_t p = 0; p < visible; ++p) sum += (row[p] = std::exp(row[p] - mx));
    const float inv = float(1.0 / sum);
    for (int64_t p = 0; p < visible; ++p) row[p] *= inv;
    std::fill(row + visible, row + n, 0.0f);  // exact zeros: the backward's products read them
  }
}

void attention_block(float* out, int64_t ld_out, float* S, int64_t ld_s, const float* q, int64_t ld_q, int64_t tq,
                     const float* k, const float* v, int64_t ld_kv, int64_t p0, int64_t hd) {
  attention_probabilities(S, ld_s, q, ld_q, tq, k, ld_kv, p0, hd);
  // O = P V row by row over the row's visible keys only: a sum whose length
  // and order depend on the row's position alone, never on the block or the
  // padded length, so a sequence's values do not depend on what shares its pass.
  for (int64_t i = 0; i < tq; ++i) {
    float* o = out + i * ld_out;
    std::fill(o, o + hd, 0.0f);
    const float* row = S + i * ld_s;
    for (int64_t p = 0, visible = p0 + i + 1; p < visible; ++p) axpy(row[p], v + p * ld_kv, o, hd);
  }
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, int64_t ld_dout, const float* P,
                        const float* q, int64_t ld_q, const float* k, const float* v, int64_t ld_kv, int64_t T,
                        int64_t hd, float* scratch) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  float* dS = scratch;                    // (T, T): dP, then dS in place
  float* opT = scratch + T * T;           // (hd, T): K^T, Q^T, dO^T in turn
  float* resT = scratch + T * T + hd * T;  // (hd, T): dK^T, then dV^T

  // dP = dO V^T (row i needs keys 0..i), then the softmax backward row by row:
  // dS[i, j] = scale * P[i, j] (dP[i, j] - sum_p P[i, p] dP[i, p]), the scale
  // of S = scale Q K^T folded in. Zeros above the diagonal, where P is zero.
  for (int64_t i0 = 0; i0 < T; i0 += kCausalBlock) {
    const int64_t tq = std::min(kCausalBlock, T - i0), n = i0 + tq;
    matmul_rows(dS + i0 * T, T, dout + i0 * ld_dout, ld_dout, tq, f32_matrix(v, n, hd, ld_kv), 0, n, false);
    for (int64_t i = i0; i < i0 + tq; ++i) {
      float* row = dS + i * T;
      const float* prow = P + i * T;
      double D = 0;
      for (int64_t p = 0; p <= i; ++p) D += double(prow[p]) * double(row[p]);
      const float Df = float(D);
      for (int64_t p = 0; p <= i; ++p) row[p] = scale * prow[p] * (row[p] - Df);
      std::fill(row + i + 1, row + T, 0.0f);
    }
  }

  // dQ += dS K: dQ[i, c] = sum_j dS[i, j] K^T[c, j]; row block i0 needs j < i0 + tq.
  transpose(opT, k, T, hd, ld_kv);
  for (int64_t i0 = 0; i0 < T; i0 += kCausalBlock) {
    const int64_t tq = std::min(kCausalBlock, T - i0), n = i0 + tq;
    matmul_rows(dq + i0 * ld_q, ld_q, dS + i0 * T, T, tq, f32_matrix(opT, hd, n, T), 0, hd, true);
  }

  // dK += dS^T Q and dV += P^T dO, as dK^T = Q^T dS and dV^T = dO^T P on the
  // transposed product (matmul_cols reads dS and P as they are: only the hd x T
  // operands and results are transposed). Column j of dS and P is zero above
  // row j, so column block j0 sums rows j0.. only. Each element's sum is
  // formed from zero, then added to dk, dv once.
  auto lower_product_add = [&](float* y, const float* xT, const float* w) {
    for (int64_t j0 = 0; j0 < T; j0 += kKeyBlock)
      matmul_cols(resT, T, xT + j0, T, hd, f32_matrix(w + j0 * T, T - j0, T, T), j0, std::min(T, j0 + kKeyBlock),
                  false);
    transpose_add(y, ld_kv, resT, hd, T, T);
  };
  transpose(opT, q, T, hd, ld_q);
  lower_product_add(dk, opT, dS);
  transpose(opT, dout, T, hd, ld_dout);
  lower_product_add(dv, opT, P);
}

double cross_entropy_forward_backward(float* logits, int64_t V, int32_t target, float grad_scale) {
  if (target < 0 || target >= V) fail("cross_entropy: target {} outside the vocabulary of {} tokens", target, V);
  float mx = -INFINITY;
  for (int64_t i = 0; i < V; ++i) mx = std::max(mx, logits[i]);
  const float target_logit = logits[target];
  // One exp per logit, kept in place; the sum of the exps in double (V = 128256 terms).
  double sum = 0;
  for (int64_t i = 0; i < V; ++i) sum += (logits[i] = std::exp(logits[i] - mx));
  const float c = float(double(grad_scale) / sum);
  for (int64_t i = 0; i < V; ++i) logits[i] *= c;
  logits[target] -= grad_scale;
  return double(mx) + std::log(sum) - double(target_logit);
}

double cross_entropy_forward(const float* logits, int64_t V, int32_t target) {
  if (target < 0 || target >= V) fail("cross_entropy: target {} outside the vocabulary of {} tokens", target, V);
  float mx = -INFINITY;
  for (int64_t i = 0; i < V; ++i) mx = std::max(mx, logits[i]);
  double sum = 0;
  for (int64_t i = 0; i < V; ++i) sum += std::exp(logits[i] - mx);
  return double(mx) + std::log(sum) - double(logits[target]);
}

void tile_add(float* y, const float* z, int64_t n, int64_t r, float s) { tile_add_range(y, z, 0, n, r, s); }

void tile_add_range(float* y, const float* z, int64_t i0, int64_t i1, int64_t r, float s) {
  FLORA_ASSERT(r > 0);
  for (int64_t i = i0, j = i0 % r; i < i1; ++i) {  // j = i mod r, without a division per element
    y[i] += s * z[j];
    if (++j == r) j = 0;
  }
}

void fold_add(float* dz, const float* dy, int64_t n, int64_t r, float s) {
  FLORA_ASSERT(r > 0);
  // Each dz[j] sums its n / r terms first (in double), then scales once.
  for (int64_t j = 0; j < std::min(r, n); ++j) {
    double acc = 0;
    for (int64_t i = j; i < n; i += r) acc += dy[i];
    dz[j] += float(double(s) * acc);
  }
}

void transpose(float* out, const float* in, int64_t rows, int64_t cols, int64_t ld_in) {
  for (int64_t r0 = 0; r0 < rows; r0 += kTransposeTile) {
    const int64_t r1 = std::min(rows, r0 + kTransposeTile);
    for (int64_t c0 = 0; c0 < cols; c0 += kTransposeTile) {
      const int64_t c1 = std::min(cols, c0 + kTransposeTile);
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) out[c * rows + r] = in[r * ld_in + c];
    }
  }
}

void transpose_add(float* out, int64_t ld_out, const float* in, int64_t rows, int64_t cols, int64_t ld_in) {
  for (int64_t r0 = 0; r0 < rows; r0 += kTransposeTile) {
    const int64_t r1 = std::min(rows, r0 + kTransposeTile);
    for (int64_t c0 = 0; c0 < cols; c0 += kTransposeTile) {
      const int64_t c1 = std::min(cols, c0 + kTransposeTile);
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) out[c * ld_out + r] += in[r * ld_in + c];
    }
  }
}

}  // namespace flora::ops
