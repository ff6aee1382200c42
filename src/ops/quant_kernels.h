// The matrix kernels of the block formats (ops/quant.h), behind the entry
// points of ops.h: ops::matmul_rows and ops::matmul_cols hand a block-format
// matrix to these (ops/quant_kernels.cpp), with the same contracts.
#pragma once
#include <cstdint>

#include "ops/ops.h"

namespace flora::ops::detail {

void quant_matmul_rows(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t T, const MatrixRef& w, int64_t row0,
                       int64_t row1, bool accumulate);
void quant_matmul_cols(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t T, const MatrixRef& w, int64_t col0,
                       int64_t col1, bool accumulate);

}  // namespace flora::ops::detail
