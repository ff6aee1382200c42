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

// Block formats (ops/quant.h) run through the same two entry points, their
// values those of dequantize_row (ggml's) bit for bit on every target:
//   matmul_rows: decode (T = 1) reads the blocks in place, widening each to f32
//     in registers, one f32 multiply-add per weight; T > 1 widens tiles of rows
//     to f32 once and runs the F32 kernel over all T tokens. Either way the
//     result is an f32 sum of the products x[t, k] * w[r, k] in some order,
//     with w[r, k] the dequantized value: the F32 kernel's error bound.
//   matmul_cols: the chain guarantee above holds as stated, w[r, c] being the
//     dequantized value (tiles of rows widened to f32, then the F32 kernel).

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
