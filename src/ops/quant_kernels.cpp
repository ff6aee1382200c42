// SIMD kernels of the block formats (layouts in ops/quant.h), compiled once per
// Highway target like ops/kernels.cpp and reached through ops::matmul_rows,
// ops::matmul_cols and ops::dequantize_tile.
//
// One piece of code per format widens a block: Format::Visit hands each
// vector of the block's values, as f32, to a callback. The values are those of
// dequantize_row (ggml's dequantize_row_*) bit for bit: the same products and
// differences of f32 scales and small integers, each rounded once -- this file
// is compiled with -ffp-contract=off (CMakeLists.txt), so that d * q - m is
// never fused into one rounding. On them:
//   - decode (T = 1): each weight row block by block from the blocks in
//     memory, one f32 multiply-add per value, 4 rows at a time with the next
//     rows prefetched (each weight is read once, so nothing is widened twice);
//   - prefill and batches (T > 1): a tile of rows widened into f32 once
//     (dequantize_tile), then the F32 kernel over every token of the call, so
//     the widening is paid once per weight, not once per token;
//   - matmul_cols: passes of rows widened into f32 tiles, then the F32
//     transposed kernel, whose chain guarantee (ops.h) then holds with w[r, c]
//     the dequantized value.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/quant_kernels.cpp"
#include "ops/quant_kernels.h"

#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "ops/formats.h"
#include "ops/ops.h"
#include "ops/quant.h"
#include "util/dtype.h"
#include "util/error.h"

HWY_BEFORE_NAMESPACE();
namespace flora {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// At most 16 lanes, so that a vector never crosses a block's sub-block (16
// values in Q6_K) and every block is whole vectors (x86: 16, 8, 4 or 1 lanes).
using DF = hn::CappedTag<float, 16>;
using VF = hn::Vec<DF>;
using DI = hn::RebindToSigned<DF>;
using DU8 = hn::Rebind<uint8_t, DF>;
using DI8 = hn::Rebind<int8_t, DF>;

// N bytes at p as int32 lanes.
HWY_INLINE hn::Vec<DI> LoadBytes(const uint8_t* p) { return hn::PromoteTo(DI(), hn::LoadU(DU8(), p)); }

// Each format: Visit(df, block, f) calls f(offset, values) for every vector of
// N values of the block in increasing order of offset, the first value's index
// in the block: so a dot product accumulated over the visits, lane by lane,
// is the F32 kernel's over the dequantized row, bit for bit.
struct Q8_0 {
  static constexpr int64_t kElems = q8_0::kElems, kBytes = q8_0::kBytes;
  template <class F>
  static HWY_INLINE void Visit(DF df, const uint8_t* blk, F&& f) {
    const int64_t N = static_cast<int64_t>(hn::Lanes(df));
    const VF d = hn::Set(df, load_f16(blk + q8_0::kD));
    const auto* qs = reinterpret_cast<const int8_t*>(blk + q8_0::kQs);
#pragma GCC unroll 32
    for (int64_t j = 0; j < kElems; j += N)
      f(j, hn::Mul(hn::ConvertTo(df, hn::PromoteTo(DI(), hn::LoadU(DI8(), qs + j))), d));
  }
};

struct Q4_0 {
  static constexpr int64_t kElems = q4_0::kElems, kBytes = q4_0::kBytes;
  template <class F>
  static HWY_INLINE void Visit(DF df, const uint8_t* blk, F&& f) {
    const DI di;
    const int64_t N = static_cast<int64_t>(hn::Lanes(df));
    const VF d = hn::Set(df, load_f16(blk + q4_0::kD));
    const auto low = hn::Set(di, 0xf), eight = hn::Set(di, 8);
#pragma GCC unroll 16
    for (int64_t j = 0; j < kElems / 2; j += N)
      f(j, hn::Mul(hn::ConvertTo(df, hn::Sub(hn::And(LoadBytes(blk + q4_0::kQs + j), low), eight)), d));
#pragma GCC unroll 16
    for (int64_t j = 0; j < kElems / 2; j += N)
      f(j + kElems / 2,
        hn::Mul(hn::ConvertTo(df, hn::Sub(hn::ShiftRight<4>(LoadBytes(blk + q4_0::kQs + j)), eight)), d));
  }
};

struct Q4_K {
  static constexpr int64_t kElems = q4_k::kElems, kBytes = q4_k::kBytes;
  template <class F>
  static HWY_INLINE void Visit(DF df, const uint8_t* blk, F&& f) {
    const DI di;
    const int64_t N = static_cast<int64_t>(hn::Lanes(df));
    // dm[j] = d * scale_j, dm[8 + j] = dmin * min_j: dequantize_row's d1, m1, ...
    // widened by vector, the multipliers d | dmin built in registers (a vector
    // load of scalar stores would stall the block on store forwarding).
    uint8_t sm[16];
    q4_k_scales_mins(blk + q4_k::kScales, sm);
    const float d = load_f16(blk + q4_k::kD), dmin = load_f16(blk + q4_k::kDmin);
    HWY_ALIGN float dm[16];
#pragma GCC unroll 16
    for (int64_t i = 0; i < 16; i += N) {
      const VF by = i >= 8
                        ? hn::Set(df, dmin)
                        : hn::IfThenElse(hn::FirstN(df, static_cast<size_t>(8 - i)), hn::Set(df, d), hn::Set(df, dmin));
      hn::Store(hn::Mul(by, hn::ConvertTo(df, LoadBytes(sm + i))), df, dm + i);
    }
    const auto low = hn::Set(di, 0xf);
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {
      const VF d1 = hn::Set(df, dm[2 * c]), m1 = hn::Set(df, dm[8 + 2 * c]);
      const VF d2 = hn::Set(df, dm[2 * c + 1]), m2 = hn::Set(df, dm[8 + 2 * c + 1]);
      const uint8_t* qs = blk + q4_k::kQs + 32 * c;
#pragma GCC unroll 32
      for (int64_t l = 0; l < 32; l += N)
        f(64 * c + l, hn::Sub(hn::Mul(d1, hn::ConvertTo(df, hn::And(LoadBytes(qs + l), low))), m1));
#pragma GCC unroll 32
      for (int64_t l = 0; l < 32; l += N)
        f(64 * c + 32 + l, hn::Sub(hn::Mul(d2, hn::ConvertTo(df, hn::ShiftRight<4>(LoadBytes(qs + l)))), m2));
    }
  }
};

struct Q6_K {
  static constexpr int64_t kElems = q6_k::kElems, kBytes = q6_k::kBytes;
  template <class F>
  static HWY_INLINE void Visit(DF df, const uint8_t* blk, F&& f) {
    const DI di;
    const int64_t N = static_cast<int64_t>(hn::Lanes(df));
    // ds[j] = d * scale_j for the 16 sub-blocks: dequantize_row's d * sc.
    const VF d = hn::Set(df, load_f16(blk + q6_k::kD));
    const auto* sc = reinterpret_cast<const int8_t*>(blk + q6_k::kScales);
    HWY_ALIGN float ds[16];
#pragma GCC unroll 16
    for (int64_t i = 0; i < 16; i += N)
      hn::Store(hn::Mul(d, hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(DI8(), sc + i)))), df, ds + i);
    const auto low = hn::Set(di, 0xf), pair = hn::Set(di, 3), bias = hn::Set(di, 32);
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = blk + q6_k::kQl + 64 * h;
      const uint8_t* qh = blk + q6_k::kQh + 32 * h;
      // Quarter k < 4 of the half: the low nibbles of ql[0..32) (k = 0) or
      // ql[32..64) (k = 1), then their high nibbles, with qh's bit pair k.
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k)
#pragma GCC unroll 32
        for (int64_t l = 0; l < 32; l += N) {
          const auto bytes = LoadBytes(ql + 32 * (k & 1) + l);
          const auto nibble = k < 2 ? hn::And(bytes, low) : hn::ShiftRight<4>(bytes);
          const auto top = hn::And(hn::ShiftRightSame(LoadBytes(qh + l), 2 * k), pair);
          const auto q = hn::Sub(hn::Or(nibble, hn::ShiftLeft<4>(top)), bias);
          f(128 * h + 32 * k + l, hn::Mul(hn::Set(df, ds[8 * h + 2 * k + l / 16]), hn::ConvertTo(df, q)));
        }
    }
  }
};

// Calls f(Format()) with the format of `dtype`.
template <class F>
HWY_INLINE void WithFormat(DType dtype, const char* what, F&& f) {
  switch (dtype) {
    case DType::Q8_0:
      return f(Q8_0());
    case DType::Q4_0:
      return f(Q4_0());
    case DType::Q4_K:
      return f(Q4_K());
    case DType::Q6_K:
      return f(Q6_K());
    default:
      fail("{}: format {} has no kernel in ops/quant_kernels.cpp", what, dtype_name(dtype));
  }
}

// ---- decode: rows of blocks straight from memory

// kRows weight rows (row_bytes apart) x one token: kRows dot products over
// `blocks` blocks. prefetch: the same blocks of the next kRows rows, fetched
// a block ahead of their use (each row is a new stretch of memory).
template <int kRows, class Format>
HWY_INLINE void DotRows(const float* HWY_RESTRICT x, const uint8_t* HWY_RESTRICT w, int64_t row_bytes, int64_t blocks,
                        float* HWY_RESTRICT y, bool accumulate, const uint8_t* prefetch) {
  const DF df;
  VF acc[kRows];
#pragma GCC unroll 4
  for (int r = 0; r < kRows; ++r) acc[r] = hn::Zero(df);
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t at = b * Format::kBytes;
    if (prefetch)
#pragma GCC unroll 4
      for (int r = 0; r < kRows; ++r)
        for (int64_t line = 0; line < Format::kBytes; line += 64)
          __builtin_prefetch(prefetch + r * row_bytes + at + line, 0, 0);
    const float* xb = x + b * Format::kElems;
#pragma GCC unroll 4
    for (int r = 0; r < kRows; ++r)
      Format::Visit(df, w + r * row_bytes + at,
                    [&](int64_t j, VF v) { acc[r] = hn::MulAdd(v, hn::LoadU(df, xb + j), acc[r]); });
  }
#pragma GCC unroll 4
  for (int r = 0; r < kRows; ++r) {
    const float s = hn::GetLane(hn::SumOfLanes(df, acc[r]));
    y[r] = accumulate ? y[r] + s : s;
  }
}

constexpr int kRowBlock = 4;

void DecodeRows(float* y, const float* x, const MatrixRef& w, int64_t row0, int64_t row1, bool accumulate) {
  const int64_t row_bytes = w.row_bytes();
  const auto* data = static_cast<const uint8_t*>(w.data);
  WithFormat(w.dtype, "matrix product", [&](auto format) {
    using Format = decltype(format);
    const int64_t blocks = w.cols / Format::kElems;
    int64_t r = row0;
    for (; r + kRowBlock <= row1; r += kRowBlock) {
      const uint8_t* next = r + 2 * kRowBlock <= row1 ? data + (r + kRowBlock) * row_bytes : nullptr;
      DotRows<kRowBlock, Format>(x, data + r * row_bytes, row_bytes, blocks, y + r, accumulate, next);
    }
    for (; r < row1; ++r) DotRows<1, Format>(x, data + r * row_bytes, row_bytes, blocks, y + r, accumulate, nullptr);
  });
}

// ---- tiles widened to f32

// out (row1 - row0, (b1 - b0) blocks of values) with row stride ldo: blocks
// [b0, b1) of rows [row0, row1), as dequantize_row gives them.
void DequantizeTile(float* out, int64_t ldo, const MatrixRef& w, int64_t row0, int64_t row1, int64_t b0, int64_t b1) {
  const DF df;
  const int64_t row_bytes = w.row_bytes();
  const auto* data = static_cast<const uint8_t*>(w.data);
  WithFormat(w.dtype, "dequantize tile", [&](auto format) {
    using Format = decltype(format);
    for (int64_t r = row0; r < row1; ++r) {
      float* o = out + (r - row0) * ldo;
      for (int64_t b = b0; b < b1; ++b) {
        float* ob = o + (b - b0) * Format::kElems;
        Format::Visit(df, data + r * row_bytes + b * Format::kBytes,
                      [&](int64_t j, VF v) { hn::StoreU(v, df, ob + j); });
      }
    }
  });
}

}  // namespace HWY_NAMESPACE
}  // namespace flora
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace flora::ops {

HWY_EXPORT(DecodeRows);
HWY_EXPORT(DequantizeTile);

namespace {

// Scratch of the f32 tiles, one per thread (the products run on every
// thread of the pool at once), kept between calls.
std::vector<float>& tile_scratch(size_t floats) {
  thread_local std::vector<float> scratch;
  if (scratch.size() < floats) scratch.resize(floats);
  return scratch;
}

// Floats per tile: 256 KiB, which stays in L2 while the F32 kernel passes
// over it once per 64 tokens (rows) or per token (cols).
constexpr int64_t kTileFloats = 64 * 1024;

}  // namespace

void dequantize_tile(float* out, int64_t ldo, const MatrixRef& w, int64_t row0, int64_t row1, int64_t col0,
                     int64_t col1) {
  const WeightFormat& f = weight_format(w.dtype, "dequantize tile");
  if (col0 % f.block_elems != 0 || col1 % f.block_elems != 0 || col0 < 0 || col1 > w.cols || col0 > col1)
    fail("dequantize tile: columns [{}, {}) are not whole {}-element blocks of {} in {} columns", col0, col1,
         f.block_elems, f.name, w.cols);
  if (!is_quantized(w.dtype)) {  // one-element blocks: the scalar widening
    const auto* data = static_cast<const uint8_t*>(w.data);
    for (int64_t r = row0; r < row1; ++r)
      dequantize_row(w.dtype, data + r * w.row_bytes() + col0 * f.block_bytes, col1 - col0, out + (r - row0) * ldo);
    return;
  }
  HWY_DYNAMIC_DISPATCH(DequantizeTile)(out, ldo, w, row0, row1, col0 / f.block_elems, col1 / f.block_elems);
}

namespace detail {

void quant_matmul_rows(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t T, const MatrixRef& w, int64_t row0,
                       int64_t row1, bool accumulate) {
  if (T == 1) return HWY_DYNAMIC_DISPATCH(DecodeRows)(y, x, w, row0, row1, accumulate);
  // Rows per tile: a multiple of the F32 kernel's 4-row register block.
  const int64_t K = w.cols;
  const int64_t rows = std::max<int64_t>(4, kTileFloats / std::max<int64_t>(K, 1) / 4 * 4);
  std::vector<float>& tile = tile_scratch(static_cast<size_t>(rows * K));
  for (int64_t r0 = row0; r0 < row1; r0 += rows) {
    const int64_t r1 = std::min(row1, r0 + rows);
    dequantize_tile(tile.data(), K, w, r0, r1, 0, K);
    matmul_rows(y + r0, ldy, x, ldx, T, MatrixRef{tile.data(), DType::F32, r1 - r0, K, 0}, 0, r1 - r0, accumulate);
  }
}

void quant_matmul_cols(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t T, const MatrixRef& w, int64_t col0,
                       int64_t col1, bool accumulate) {
  const int64_t B = weight_format(w.dtype, "transposed matrix product").block_elems;
  if (w.rows == 0 || col0 >= col1) {  // an empty sum: what the F32 kernel writes for it
    if (!accumulate)
      for (int64_t t = 0; t < T; ++t) std::fill(y + t * ldy + col0, y + t * ldy + col1, 0.0f);
    return;
  }
  // Tiles of whole blocks covering [col0, col1): columns [c0, c1) of the tile
  // are the output's, its others are read but never written to y. The chains
  // run over w's rows in order through y between the passes (exact), so the
  // result is that of the F32 kernel over the dequantized matrix, bit for bit.
  const int64_t first = col0 / B * B, last = (col1 + B - 1) / B * B;
  const int64_t width = std::min(last - first, std::max(B, 256 / B * B));
  const int64_t rows = std::max<int64_t>(1, kTileFloats / width);
  std::vector<float>& tile = tile_scratch(static_cast<size_t>(rows * width));
  for (int64_t r0 = 0; r0 < w.rows; r0 += rows) {
    const int64_t r1 = std::min(w.rows, r0 + rows);
    for (int64_t b = first; b < last; b += width) {
      const int64_t e = std::min(last, b + width);
      dequantize_tile(tile.data(), e - b, w, r0, r1, b, e);
      const int64_t c0 = std::max(col0, b), c1 = std::min(col1, e);
      matmul_cols(y + b, ldy, x + r0, ldx, T, MatrixRef{tile.data(), DType::F32, r1 - r0, e - b, 0}, c0 - b, c1 - b,
                  accumulate || r0 > 0);
    }
  }
}

}  // namespace detail
}  // namespace flora::ops
#endif  // HWY_ONCE
