// Scalar references of the SIMD kernels in ops.h, written as directly as the
// math reads. Templated on the accumulator so the tests can run them in double
// as the exact side of a comparison.
#pragma once
#include <cmath>
#include <cstdint>

#include "ops/formats.h"
#include "ops/ops.h"
#include "ops/quant.h"
#include "util/error.h"
#include "util/dtype.h"

namespace flora::ref {

// w[r, c] widened; its row found through the format table (MatrixRef::row_bytes).
// A block format's value is dequantize_row's (ggml's) of the block holding c.
inline double weight_at(const MatrixRef& w, int64_t r, int64_t c) {
  const WeightFormat& format = weight_format(w.dtype, "reference product");
  const uint8_t* row = static_cast<const uint8_t*>(w.data) + r * w.row_bytes();
  switch (w.dtype) {
    case DType::BF16: return bf16_to_f32(reinterpret_cast<const uint16_t*>(row)[c]);
    case DType::F16: return f16_to_f32(reinterpret_cast<const uint16_t*>(row)[c]);
    case DType::F32: return reinterpret_cast<const float*>(row)[c];
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_K:
    case DType::Q6_K: {
      float block[q4_k::kElems];  // the largest block
      dequantize_row(w.dtype, row + c / format.block_elems * format.block_bytes, format.block_elems, block);
      return block[c % format.block_elems];
    }
    default: fail("reference product: format {} is in kWeightFormats but has no reference", format.name);
  }
}

template <typename Acc>
void matmul_rows(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t T, const MatrixRef& w,
                 int64_t row0, int64_t row1, bool accumulate) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t r = row0; r < row1; ++r) {
      Acc s = 0;
      for (int64_t k = 0; k < w.cols; ++k) s += Acc(x[t * ldx + k]) * Acc(weight_at(w, r, k));
      float& out = y[t * ldy + r];
      out = accumulate ? float(Acc(out) + s) : float(s);
    }
}

// The chain of ops::matmul_cols: from y (accumulate) or 0, over r in order.
template <typename Acc>
void matmul_cols(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t T, const MatrixRef& w,
                 int64_t col0, int64_t col1, bool accumulate) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = col0; c < col1; ++c) {
      float& out = y[t * ldy + c];
      Acc s = accumulate ? Acc(out) : Acc(0);
      for (int64_t r = 0; r < w.rows; ++r) s += Acc(x[t * ldx + r]) * Acc(weight_at(w, r, c));
      out = float(s);
    }
}

template <typename Acc>
Acc dot(const float* a, const float* b, int64_t n) {
  Acc s = 0;
  for (int64_t i = 0; i < n; ++i) s += Acc(a[i]) * Acc(b[i]);
  return s;
}

template <typename Acc>
void rmsnorm(float* out, const float* x, const float* w, int64_t n, float eps) {
  Acc ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += Acc(x[i]) * Acc(x[i]);
  const Acc inv = Acc(1) / std::sqrt(ss / Acc(n) + Acc(eps));
  for (int64_t i = 0; i < n; ++i) out[i] = float(Acc(x[i]) * inv * Acc(w[i]));
}

}  // namespace flora::ref
