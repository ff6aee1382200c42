// CPU kernels. Each works on one thread over a slice of the work (a range of
// output rows, a range of heads); the model decides what runs in parallel, so
// that several kernels can share one parallel region — one synchronisation
// point — and fusion is a property of the execution, not of the weights.
// The SIMD versions (Highway, runtime dispatch over the targets compiled in)
// live in kernels.cpp; their scalar references are in ops/reference.h.
//
// Layout: every matrix is row-major. Weights are (out, in) as in PyTorch, so a
// projection is y = x W^T with x (T, in) and y (T, out).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ops/formats.h"
#include "util/dtype.h"

namespace flora {

// A weight matrix in its stored format (a row of kWeightFormats, ops/formats.h), not owned.
struct MatrixRef {
  const void* data = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0;  // (rows, cols)
  int64_t stride = 0;          // elements between rows; 0 means cols
  int64_t row_stride() const { return stride ? stride : cols; }
  // Bytes between rows, through the format's blocks; a dtype with no format,
  // or a stride that is not whole blocks, is an error.
  int64_t row_bytes() const;
};

namespace ops {

// y[t, r] (=|+=) sum_k x[t, k] * w[r, k] for t < T, row0 <= r < row1.
// x: (T, K) with row stride ldx; y: (T, *) with row stride ldy, written at
// columns row0..row1. accumulate: add into y instead of overwriting (used for
// residual adds in the epilogue of the exit projections).
void matmul_rows(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t T,
                 const MatrixRef& w, int64_t row0, int64_t row1, bool accumulate);

// The transposed product, y = x W, reading W as it is stored (the input
// gradient dx = dy W of a projection, with no copy of W^T):
//   y[t, c] (=|+=) sum_r x[t, r] * w[r, c] for t < T, col0 <= c < col1, r < w.rows.
// x: (T, w.rows) with row stride ldx; y: (T, *) with row stride ldy, written at
// columns col0..col1.
// Bit for bit, each output element is one chain in f32 over r in increasing
// order, starting from y[t, c] (accumulate) or 0:
//   acc = fma(x[t, r], w[r, c], acc)   (mul then add where the target has no FMA)
// in vector lanes and at the column tail alike, so the result does not depend
// on how columns are split between calls (threads) or tokens grouped into
// calls (batching, padding); tests/test_ops.cpp checks both on every target.
void matmul_cols(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t T,
                 const MatrixRef& w, int64_t col0, int64_t col1, bool accumulate);

// Block formats (ops/quant.h) run through the same two entry points:
//   matmul_rows: integer dot products, as llama.cpp computes them. Each token's
//     row of x is first rounded to 8-bit groups (ActivationBlocks below), then
//     every weight block meets the token's group as a sum of int8 x int8
//     products (exact, in integers), scaled by the weight block's and the
//     group's f32 scales. Every (row, token) pair runs the same operations
//     whatever T, the row range or the other tokens, so rows are independent
//     and a row's result does not depend on batching (decode, prefill in
//     pieces, other requests) bit for bit; across targets the f32 combine of
//     the block sums differs in grouping. Against the exact product of x, the
//     error is the activations' rounding (at most half a step, d / 2, per
//     element) plus the f32 error bound of a sum of K products.
//   matmul_cols: the chain guarantee above holds as stated, w[r, c] being the
//     dequantized value (tiles of rows widened to f32, then the F32 kernel),
//     and x not rounded: the input gradients of training.

// The input of the integer products: T rows of K activations (K whole
// groups) rounded to 8-bit groups of `group` elements with one f32 scale:
// 32 for weights in blocks of 32 (Q8_0, Q4_0: llama.cpp's Q8_0 of the
// input), 256 for the K-quants (Q4_K, Q6_K: its Q8_K). Per group
// d = max|x| / 127 and q = x (127 / max|x|) rounded to nearest (ties to
// even), so |x - d q| <= d / 2 (up to the divisions' rounding) and
// |q| <= 127; a group holding a NaN or an infinity gets d = NaN (q = 0), so
// every product it meets is NaN. The rounding is the same bits on every
// target (an exact maximum, two divisions per group, one multiply and one
// rounding addition per value).
struct ActivationBlocks {
  int64_t T = 0, K = 0, group = 0;
  std::vector<int8_t> q;      // (T, K)
  std::vector<float> d;       // (T, K / group)
  std::vector<int16_t> sums;  // (T, K / 32): the sum of q over each 32 elements (Q4_K's mins)
};
// The group size of the activations a block format's products take (32 or
// 256); an error for a format with one-element blocks.
int64_t activation_group(DType weights);
// x (T, K) with row stride ldx -> out (resized as needed, so a kept one is reused).
void round_activations(const float* x, int64_t ldx, int64_t T, int64_t K, int64_t group, ActivationBlocks& out);
// matmul_rows of a block-format w over activations already rounded for it
// (x.group == activation_group(w.dtype), x.K == w.cols): the same result, bit
// for bit, as matmul_rows on the f32 rows x was rounded from. Products that
// share an input round it once (ops::product_region, ops::product).
void matmul_rows(float* y, int64_t ldy, const ActivationBlocks& x, const MatrixRef& w, int64_t row0, int64_t row1,
                 bool accumulate);

// BF16 products: matmul_rows of BF16 weights through AVX512_BF16's dot
// product (vdpbf16ps), when the process asks for them and the CPU has the
// instruction. Each token's row of x is first rounded to bf16 (nearest, ties
// to even: f32_to_bf16), then multiplied by the weights as stored; the
// products of two bf16 values are exact in f32 and are summed in f32. Against
// the f32 kernel the error is the activations' rounding (at most 2^-9
// relative per element) plus the f32 error bound of a sum of K products. As
// with the integer products, every (row, token) pair runs the same operations
// whatever T, the row range or the other tokens, so rows stay independent of
// batching bit for bit (tests/test_ops.cpp); inputs below 2^-126 in magnitude
// (subnormal bf16) count as zero in the instruction. matmul_cols of BF16
// weights (training's input gradients dx = dy W) takes the same path: dy's
// rows rounded to bf16, each output element one f32 chain over w's rows taken
// in pairs (one vdpbf16ps lane: w[2p, c] x[t, 2p] + w[2p + 1, c] x[t, 2p + 1],
// pair after pair), so it too does not depend on how columns are split or
// tokens grouped. Off by default; f32 and F16 weights and the block formats
// never take this path.
void set_bf16_products(bool on);
bool bf16_products();  // asked for (set_bf16_products), whether or not the CPU can
// This CPU has AVX512_BF16 and the dispatcher's target is AVX-512 (so
// FLORA_CPU=avx2 and the tests' forced lesser targets run the f32 kernels).
bool bf16_dot_available();
// The path matmul_rows takes for weights of this dtype now: asked for, w is
// BF16 and bf16_dot_available().
bool bf16_products_active(DType weights);
// "bf16" while BF16 weights take the BF16 products (bf16_products_active), else
// "f32": what a benchmark's figures were measured with.
std::string products_name();
// The input of the BF16 products: T rows of K activations rounded to bf16,
// row stride ld = K rounded up to 32, zeros past K.
struct Bf16Activations {
  int64_t T = 0, K = 0, ld = 0;
  std::vector<uint16_t> v;  // (T, ld)
};
// x (T, K) with row stride ldx -> out (resized as needed, so a kept one is reused).
void round_activations_bf16(const float* x, int64_t ldx, int64_t T, int64_t K, Bf16Activations& out);
// The same in two steps, for threads that round disjoint row ranges of one
// input: size out for (T, K), then round rows [t0, t1) of x into it.
void size_activations_bf16(int64_t T, int64_t K, Bf16Activations& out);
void round_activations_bf16_rows(const float* x, int64_t ldx, int64_t t0, int64_t t1, Bf16Activations& out);
// matmul_rows of BF16 w (w.cols == x.K) over activations already rounded,
// while bf16_products_active(BF16): the same result, bit for bit, as
// matmul_rows on the f32 rows x was rounded from (products sharing an input
// round it once: ops::product_region).
void matmul_rows(float* y, int64_t ldy, const Bf16Activations& x, const MatrixRef& w, int64_t row0, int64_t row1,
                 bool accumulate);
// matmul_cols of BF16 w (w.rows == x.K) over activations already rounded, as
// above: the same bits as matmul_cols on the f32 rows (ops::product_t rounds
// dy once for all its column chunks).
void matmul_cols(float* y, int64_t ldy, const Bf16Activations& x, const MatrixRef& w, int64_t col0, int64_t col1,
                 bool accumulate);

// out (row1 - row0, col1 - col0) with row stride ldo = rows [row0, row1) of w,
// columns [col0, col1) (whole blocks of w's format), widened to f32 exactly as
// dequantize_row widens them, bit for bit on every target.
void dequantize_tile(float* out, int64_t ldo, const MatrixRef& w, int64_t row0, int64_t row1, int64_t col0,
                     int64_t col1);

float dot(const float* a, const float* b, int64_t n);
// Sum of x; also the read loop that measures memory bandwidth.
float sum(const float* x, int64_t n);
// y += a * x
void axpy(float a, const float* x, float* y, int64_t n);
// out = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps), returned (the
// training backward reads it); out may alias x. w: (n) f32. The one RMSNorm
// of the model: the forward's, the training pass's and the final norm.
float rmsnorm(float* out, const float* x, const float* w, int64_t n, float eps);

// Name of the SIMD target the dispatcher picked on this machine ("AVX3", ...).
// The environment variable FLORA_CPU=avx512|avx2|sse4|scalar caps it (read once,
// before main; an unknown value is an error), so an AVX-512 host can run the
// AVX2 and scalar paths; "native" or unset means the best target of the CPU.
std::string simd_target_name();
std::string cpu_cap_name();  // FLORA_CPU as applied: "native" when unset
// The targets compiled into this binary that this CPU supports; tests force
// each in turn with set_simd_target_for_test to check every one.
std::vector<int64_t> simd_targets_available();
void set_simd_target_for_test(int64_t target);  // 0 = restore dispatch (under FLORA_CPU's cap)
std::string simd_target_name(int64_t target);

}  // namespace ops
}  // namespace flora
