// The BF16 dot-product kernels of ops::matmul_rows and ops::matmul_cols (ops/bf16_kernels.cpp),
// behind the entry points of ops.h, which decide when it runs
// (ops::bf16_products_active).
#pragma once
#include <cstdint>

#include "ops/ops.h"

namespace flora::ops::detail {

// This CPU has AVX512_BF16 (and the AVX-512 subsets the kernel uses).
bool cpu_has_bf16_dot();
// ops::size_activations_bf16's and ops::round_activations_bf16_rows' work.
void size_bf16(int64_t T, int64_t K, Bf16Activations& out);
void round_rows_to_bf16(const float* x, int64_t ldx, int64_t t0, int64_t t1, Bf16Activations& out);
// y[t, r] (=|+=) sum_k x[t, k] w[r, k] for row0 <= r < row1; w: BF16 (rows,
// x.K) with row stride ldw elements. Only where cpu_has_bf16_dot().
void bf16_matmul_rows(float* y, int64_t ldy, const Bf16Activations& x, const uint16_t* w, int64_t ldw, int64_t row0,
                      int64_t row1, bool accumulate);
// y[t, c] (=|+=) sum_r x[t, r] w[r, c] for col0 <= c < col1; w: BF16 (x.K,
// *) with row stride ldw elements. Only where cpu_has_bf16_dot().
void bf16_matmul_cols(float* y, int64_t ldy, const Bf16Activations& x, const uint16_t* w, int64_t ldw, int64_t col0,
                      int64_t col1, bool accumulate);

}  // namespace flora::ops::detail
