#include "ops/formats.h"

#include <iterator>

#include "ops/ops.h"
#include "util/error.h"

namespace flora {

const WeightFormat* find_weight_format(DType dtype) {
  for (const WeightFormat& f : kWeightFormats)
    if (f.dtype == dtype) return &f;
  return nullptr;
}

std::string weight_format_names() {
  std::string names;
  const size_t n = std::size(kWeightFormats);
  for (size_t i = 0; i < n; ++i) {
    if (i) names += i + 1 == n ? " or " : ", ";
    names += kWeightFormats[i].name;
  }
  return names;
}

const WeightFormat& weight_format(DType dtype, std::string_view what) {
  if (const WeightFormat* f = find_weight_format(dtype)) return *f;
  // A format without a kernel must never be read as another one.
  fail("{}: weights of dtype {} have no kernel (expected {})", what, dtype_name(dtype), weight_format_names());
}

int64_t MatrixRef::row_bytes() const {
  const WeightFormat& f = weight_format(dtype, "matrix row");
  const int64_t ld = row_stride();
  if (ld % f.block_elems != 0 || cols % f.block_elems != 0)
    fail("matrix row: {} columns with a row stride of {} are not whole {}-element blocks of {}", cols, ld,
         f.block_elems, f.name);
  return ld / f.block_elems * f.block_bytes;
}

}  // namespace flora
