// Weight formats: how the rows of a weight matrix are laid out in memory, one
// row of kWeightFormats per format that has a matrix kernel (ops::matmul_rows,
// ops::matmul_cols in ops.h) and a scalar reference (ref::weight_at).
//
// A matrix row is a whole number of blocks, each `block_elems` elements in
// `block_bytes` bytes, scales included: BF16, F16 and F32 are blocks of one
// element, ggml's block formats (layouts and codecs in ops/quant.h) rows of the
// same table, so the byte geometry of a matrix (MatrixRef::row_bytes) is
// computed in one place for all:
//   Q8_0: 32 elements in 34 bytes (32 int8, one f16 scale)
//   Q4_0: 32 elements in 18 bytes (32 4-bit values, one f16 scale)
//   Q4_K: 256 elements in 144 bytes (8 sub-blocks of 32 with 6-bit scales and mins)
//   Q6_K: 256 elements in 210 bytes (16 sub-blocks of 16 with int8 scales)
// What a kernel does with a block (widen, scale) is its own per-format code:
// ops/kernels.cpp for one-element blocks, ops/quant_kernels.cpp for the rest.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "ops/quant.h"
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
    {DType::Q8_0, "Q8_0", q8_0::kElems, q8_0::kBytes},
    {DType::Q4_0, "Q4_0", q4_0::kElems, q4_0::kBytes},
    {DType::Q4_K, "Q4_K", q4_k::kElems, q4_k::kBytes},
    {DType::Q6_K, "Q6_K", q6_k::kElems, q6_k::kBytes},
};

// The row of `dtype`, or null when no matrix kernel reads it.
const WeightFormat* find_weight_format(DType dtype);
// The row of `dtype`; a dtype without one is an error that names `what` (the
// kernel asking), the dtype, and the formats there are.
const WeightFormat& weight_format(DType dtype, std::string_view what);
// "BF16, F16, F32, Q8_0, Q4_0, Q4_K or Q6_K": the names of the table, for messages.
std::string weight_format_names();

}  // namespace flora
