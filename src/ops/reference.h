// Scalar references of the SIMD kernels in ops.h, written as directly as the
// math reads. Templated on the accumulator so the tests can run them in double
// as the exact side of a comparison.
#pragma once
#include <cmath>
#include <cstdint>

#include "ops/ops.h"
#include "util/error.h"
#include "util/dtype.h"

namespace flora::ref {

inline double weight_at(const MatrixRef& w, int64_t r, int64_t c) {
  const int64_t i = r * w.row_stride() + c;
  switch (w.dtype) {
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(w.data)[i]);
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(w.data)[i]);
    case DType::F32: return static_cast<const float*>(w.data)[i];
    default: fail("reference product: weights of dtype {} have no reference (expected F32, F16 or BF16)",
                  dtype_name(w.dtype));
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
