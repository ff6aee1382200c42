// Weight formats: how the rows of a weight matrix are laid out in memory, one
// row of kWeightFormats per format that has a matrix kernel (ops::matmul_rows,
// ops::matmul_cols in ops.h) and a scalar reference (ref::weight_at).
//
// A matrix row is a whole number of blocks, each `block_elems` elements in
// `block_bytes` bytes, scales included. The formats of today are blocks of one
// element; block formats are new rows of the same table, so the byte geometry
// of a matrix (MatrixRef::row_bytes) is computed in one place for all:
//   Q8_0: 32 elements in 34 bytes (32 int8, one f16 scale)
//   Q4_0: 32 elements in 18 bytes (32 4-bit values, one f16 scale)
//   K-quants: 256 elements per super-block (Q4_K: 144 bytes, Q6_K: 210, ...)
// What a kernel does with a block (widen, scale) is its own per-format code.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "util/dtype.h"

namespace flora {

struct WeightFormat {
  DType dtype;
  std::string_view name;  // as dtype_name names it
  int64_t block_elems;    // elements per block
  int64_t block_bytes;    // bytes per block, scales included
};

inline constexpr WeightFormat kWeightFormats[] = {
    {DType::BF16, "BF16", 1, 2},
    {DType::F16, "F16", 1, 2},
    {DType::F32, "F32", 1, 4},
};

// The row of `dtype`, or null when no matrix kernel reads it.
const WeightFormat* find_weight_format(DType dtype);
// The row of `dtype`; a dtype without one is an error that names `what` (the
// kernel asking), the dtype, and the formats there are.
const WeightFormat& weight_format(DType dtype, std::string_view what);
// "BF16, F16 or F32": the names of the table, for messages.
std::string weight_format_names();

}  // namespace flora
