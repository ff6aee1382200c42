// SIMD kernels of ops.h, compiled once per Highway target and dispatched at run
// time. Weights are read in their stored format (ops/formats.h) and widened to
// f32 in registers; accumulation is in f32. The block formats' products are in
// ops/quant_kernels.cpp, reached through the same entry points.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/kernels.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <utility>

#include "ops/bf16_kernels.h"
#include "ops/formats.h"
#include "ops/ops.h"
#include "ops/quant_kernels.h"
#include "util/dtype.h"
#include "util/error.h"

HWY_BEFORE_NAMESPACE();
namespace flora {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

template <typename TW>
HWY_INLINE VF LoadWidened(DF df, const TW* HWY_RESTRICT p) {
  if constexpr (std::is_same_v<TW, float>) {
    return hn::LoadU(df, p);
  } else {
    const hn::Rebind<TW, DF> dw;
    return hn::PromoteTo(df, hn::LoadU(dw, p));
  }
}

// Scalar widening, exact as the vector one: matmul_rows' K tail (fewer than
// one vector of elements left) and matmul_cols' padded column tail.
template <typename TW>
HWY_INLINE float WidenScalar(TW v) {
  if constexpr (std::is_same_v<TW, float>) {
    return v;
  } else {
    uint16_t bits;
    std::memcpy(&bits, &v, 2);
    return std::is_same_v<TW, hwy::bfloat16_t> ? bf16_to_f32(bits) : f16_to_f32(bits);
  }
}

// Register block: kRows weight rows x kCols tokens of dot products over K.
// Accumulators stay in registers (kRows * kCols vectors), each weight vector is
// widened once and used for kCols tokens, each x vector for kRows rows.
// prefetch: the rows of the next block (same stride), fetched a block ahead
// so that each new row -- a new 4 KiB page for K = 2048 in BF16, where the
// hardware prefetcher stops -- is already on its way when it is reached.
template <int kRows, int kCols, typename TW>
HWY_INLINE void DotBlock(const float* HWY_RESTRICT x, int64_t ldx, const TW* HWY_RESTRICT w, int64_t ldw, int64_t K,
                         float* HWY_RESTRICT y, int64_t ldy, bool accumulate, const TW* prefetch = nullptr) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  VF acc[kRows][kCols];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < kCols; ++c) acc[r][c] = hn::Zero(df);
  int64_t k = 0;
  for (; k + N <= K; k += N) {
    if (prefetch && (k * static_cast<int64_t>(sizeof(TW))) % 64 == 0) {
#pragma GCC unroll 8
      for (int r = 0; r < kRows; ++r) __builtin_prefetch(prefetch + r * ldw + k, 0, 0);
    }
    VF wv[kRows];
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) wv[r] = LoadWidened(df, w + r * ldw + k);
#pragma GCC unroll 8
    for (int c = 0; c < kCols; ++c) {
      const VF xv = hn::LoadU(df, x + c * ldx + k);
#pragma GCC unroll 8
      for (int r = 0; r < kRows; ++r) acc[r][c] = hn::MulAdd(wv[r], xv, acc[r][c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < kCols; ++c) {
      float s = hn::GetLane(hn::SumOfLanes(df, acc[r][c]));
      for (int64_t kk = k; kk < K; ++kk) s += x[c * ldx + kk] * WidenScalar(w[r * ldw + kk]);
      float& out = y[c * ldy + r];
      out = accumulate ? out + s : s;
    }
}

// Tokens per register block: 4 with AVX-512's 32 vector registers (16
// accumulators + 4 weights + 1 input), 2 with AVX2's 16.
constexpr int kBlockCols = (HWY_TARGET <= HWY_AVX3) ? 4 : 2;
constexpr int kBlockRows = 4;
// Tokens per tile: the tile's inputs (kTileTokens x K floats) stay in L2 while
// every weight row block of the slice passes over them once.
constexpr int64_t kTileTokens = 64;
// Tiles of at most this many tokens (batched decode) prefetch the next row
// block as decode does: a step of batch 4 took 0.87x the time, batch 16 0.86x
// (f32 products; docs/benchmarks.md, "Batched decode: the next rows
// prefetched"). Larger tiles (prefill) are compute-bound and keep no prefetch:
// prefetching there too looked a few percent slower at pp512.
constexpr int64_t kPrefetchTokens = 16;

// prefetch: the next block's rows, passed to the first block of tokens, the
// one pass that reads this block's rows from memory (the others find them in
// cache), so that a small batch streams its weights as decode does.
template <int kRows, typename TW>
HWY_INLINE void DotRowsAllCols(const float* x, int64_t ldx, int64_t T, const TW* w, int64_t ldw, int64_t K, float* y,
                               int64_t ldy, bool accumulate, const TW* prefetch = nullptr) {
  int64_t t = 0;
  for (; t + kBlockCols <= T; t += kBlockCols, prefetch = nullptr)
    DotBlock<kRows, kBlockCols>(x + t * ldx, ldx, w, ldw, K, y + t * ldy, ldy, accumulate, prefetch);
  for (; t < T; ++t, prefetch = nullptr)
    DotBlock<kRows, 1>(x + t * ldx, ldx, w, ldw, K, y + t * ldy, ldy, accumulate, prefetch);
}

template <typename TW>
void MatmulRowsT(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t T, const TW* w, int64_t ldw, int64_t K,
                 int64_t row0, int64_t row1, bool accumulate) {
  if (T == 1) {  // decode: memory-bound, stream the rows with prefetch
    int64_t r = row0;
    for (; r + kBlockRows <= row1; r += kBlockRows) {
      const TW* next = r + 2 * kBlockRows <= row1 ? w + (r + kBlockRows) * ldw : nullptr;
      DotBlock<kBlockRows, 1>(x, ldx, w + r * ldw, ldw, K, y + r, ldy, accumulate, next);
    }
    for (; r < row1; ++r) DotBlock<1, 1>(x, ldx, w + r * ldw, ldw, K, y + r, ldy, accumulate);
    return;
  }
  for (int64_t t0 = 0; t0 < T; t0 += kTileTokens) {
    const int64_t tn = std::min(kTileTokens, T - t0);
    const float* xt = x + t0 * ldx;
    float* yt = y + t0 * ldy;
    int64_t r = row0;
    for (; r + kBlockRows <= row1; r += kBlockRows) {
      const TW* next = tn <= kPrefetchTokens && r + 2 * kBlockRows <= row1 ? w + (r + kBlockRows) * ldw : nullptr;
      DotRowsAllCols<kBlockRows>(xt, ldx, tn, w + r * ldw, ldw, K, yt + r, ldy, accumulate, next);
    }
    for (; r < row1; ++r) DotRowsAllCols<1>(xt, ldx, tn, w + r * ldw, ldw, K, yt + r, ldy, accumulate);
  }
}

// Calls f(w's data as TW*, row stride in elements) with the element type of
// w's format. The stride is row_bytes() in blocks, which are one element for
// the formats with a kernel here; a dtype with no row in kWeightFormats fails
// in weight_format, naming `what`.
template <typename F>
HWY_INLINE void WithWeights(const MatrixRef& w, const char* what, F&& f) {
  const WeightFormat& format = weight_format(w.dtype, what);
  const int64_t ld = w.row_bytes() / format.block_bytes;
  switch (w.dtype) {
    case DType::BF16: return f(static_cast<const hwy::bfloat16_t*>(w.data), ld);
    case DType::F16: return f(static_cast<const hwy::float16_t*>(w.data), ld);
    case DType::F32: return f(static_cast<const float*>(w.data), ld);
    default: fail("{}: format {} is in kWeightFormats but has no kernel in ops/kernels.cpp", what, format.name);
  }
}

void MatmulRows(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t T, const MatrixRef& w, int64_t row0,
                int64_t row1, bool accumulate) {
  WithWeights(w, "matrix product", [&](const auto* data, int64_t ldw) {
    MatmulRowsT(y, ldy, x, ldx, T, data, ldw, w.cols, row0, row1, accumulate);
  });
}

// ---- the transposed product (matmul_cols) ---------------------------------

// Register block: kTok tokens x kVec column vectors of running sums, each
// (token, column) lane one chain over the nr rows given, in order (ops.h).
// Per row r: kTok broadcasts of x[t, r], kVec widened vectors of w's row r,
// kTok * kVec multiply-adds; the accumulators stay in registers over r.
// x: (kTok, nr) row stride ldx; w: (nr, kVec N) row stride ldw;
// y: (kTok, kVec N) row stride ldy, where the chains start when from_y.
template <int kTok, int kVec, typename TW>
HWY_INLINE void ColsBlock(const float* HWY_RESTRICT x, int64_t ldx, const TW* HWY_RESTRICT w, int64_t ldw,
                          int64_t nr, float* HWY_RESTRICT y, int64_t ldy, bool from_y) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  VF acc[kTok][kVec];
#pragma GCC unroll 8
  for (int t = 0; t < kTok; ++t)
#pragma GCC unroll 8
    for (int v = 0; v < kVec; ++v) acc[t][v] = from_y ? hn::LoadU(df, y + t * ldy + v * N) : hn::Zero(df);
  for (int64_t r = 0; r < nr; ++r) {
    VF xb[kTok];
#pragma GCC unroll 8
    for (int t = 0; t < kTok; ++t) xb[t] = hn::Set(df, x[t * ldx + r]);
#pragma GCC unroll 8
    for (int v = 0; v < kVec; ++v) {
      const VF wv = LoadWidened(df, w + r * ldw + v * N);
#pragma GCC unroll 8
      for (int t = 0; t < kTok; ++t) acc[t][v] = hn::MulAdd(xb[t], wv, acc[t][v]);
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < kTok; ++t)
#pragma GCC unroll 8
    for (int v = 0; v < kVec; ++v) hn::StoreU(acc[t][v], df, y + t * ldy + v * N);
}

// Tokens per register block, and column vectors: 4 x 4 with AVX-512's 32
// registers (16 accumulators + 4 broadcasts + 1 weight vector), 3 x 4 with
// AVX2's 16 (12 + 3 + 1; 4 x 2 ran at two thirds of its speed).
constexpr int kColTok = (HWY_TARGET <= HWY_AVX3) ? 4 : 3;
constexpr int kColVec = 4;
// Rows of w per pass: the running sums go through y between passes (an f32
// stored and reloaded is exact, so the chains are unchanged), and the pass's
// (kColRows, col1 - col0) block of w -- 32 KiB for 64 BF16 columns -- stays in
// cache while every token passes over it, however many rows w has (the LM
// head's 128256).
constexpr int64_t kColRows = 256;
// Tokens per tile: the tile's inputs (kColTokens, kColRows) floats stay in L2
// while the column vectors of the call pass over them.
constexpr int64_t kColTokens = 64;

// The register blocks of one column group for T tokens.
template <int kVec, typename TW>
HWY_INLINE void ColsAllTokens(const float* x, int64_t ldx, int64_t T, const TW* w, int64_t ldw, int64_t nr, float* y,
                              int64_t ldy, bool from_y) {
  int64_t t = 0;
  for (; t + kColTok <= T; t += kColTok)
    ColsBlock<kColTok, kVec>(x + t * ldx, ldx, w, ldw, nr, y + t * ldy, ldy, from_y);
  for (; t < T; ++t) ColsBlock<1, kVec>(x + t * ldx, ldx, w, ldw, nr, y + t * ldy, ldy, from_y);
}

// The last n < N columns run through the same ColsBlock on zero-padded copies
// (wpad: w's tail widened, (nr, N); a (1, N) row of y per token), so that a
// column gets the same arithmetic in the tail as in a full vector.
HWY_INLINE void ColsTail(const float* x, int64_t ldx, int64_t T, const float* wpad, int64_t nr, int64_t n, float* y,
                         int64_t ldy, bool from_y) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  HWY_ALIGN float ypad[kColTok * hn::MaxLanes(DF())];
  std::fill(ypad, ypad + kColTok * N, 0.0f);
  int64_t t = 0;
  auto run = [&](auto tok) {
    constexpr int kTok = decltype(tok)::value;
    if (from_y)
      for (int i = 0; i < kTok; ++i) std::copy(y + (t + i) * ldy, y + (t + i) * ldy + n, ypad + i * N);
    ColsBlock<kTok, 1>(x + t * ldx, ldx, wpad, N, nr, ypad, N, from_y);
    for (int i = 0; i < kTok; ++i) std::copy(ypad + i * N, ypad + i * N + n, y + (t + i) * ldy);
  };
  for (; t + kColTok <= T; t += kColTok) run(std::integral_constant<int, kColTok>());
  for (; t < T; ++t) run(std::integral_constant<int, 1>());
}

template <typename TW>
void MatmulColsT(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t T, const TW* w, int64_t ldw, int64_t R,
                 int64_t col0, int64_t col1, bool accumulate) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  if (R == 0 && !accumulate)  // an empty sum
    for (int64_t t = 0; t < T; ++t) std::fill(y + t * ldy + col0, y + t * ldy + col1, 0.0f);
  const int64_t tail = col0 + (col1 - col0) / N * N;  // first column of the tail
  HWY_ALIGN float wpad[kColRows * hn::MaxLanes(DF())];
  for (int64_t r0 = 0; r0 < R; r0 += kColRows) {
    const int64_t nr = std::min(kColRows, R - r0);
    const bool from_y = accumulate || r0 > 0;
    const TW* wr = w + r0 * ldw;
    if (tail < col1)
      for (int64_t r = 0; r < nr; ++r)
        for (int64_t j = 0; j < N; ++j) wpad[r * N + j] = tail + j < col1 ? WidenScalar(wr[r * ldw + tail + j]) : 0.0f;
    for (int64_t t0 = 0; t0 < T; t0 += kColTokens) {
      const int64_t tn = std::min(kColTokens, T - t0);
      const float* xt = x + t0 * ldx + r0;
      float* yt = y + t0 * ldy;
      int64_t c = col0;
      for (; c + kColVec * N <= col1; c += kColVec * N)
        ColsAllTokens<kColVec>(xt, ldx, tn, wr + c, ldw, nr, yt + c, ldy, from_y);
      for (; c + N <= col1; c += N) ColsAllTokens<1>(xt, ldx, tn, wr + c, ldw, nr, yt + c, ldy, from_y);
      if (c < col1) ColsTail(xt, ldx, tn, wpad, nr, col1 - c, yt + c, ldy, from_y);
    }
  }
}

void MatmulCols(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t T, const MatrixRef& w, int64_t col0,
                int64_t col1, bool accumulate) {
  WithWeights(w, "transposed matrix product", [&](const auto* data, int64_t ldw) {
    MatmulColsT(y, ldy, x, ldx, T, data, ldw, w.rows, col0, col1, accumulate);
  });
}

float Dot(const float* HWY_RESTRICT a, const float* HWY_RESTRICT b, int64_t n) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  VF s0 = hn::Zero(df), s1 = hn::Zero(df);
  int64_t i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    s0 = hn::MulAdd(hn::LoadU(df, a + i), hn::LoadU(df, b + i), s0);
    s1 = hn::MulAdd(hn::LoadU(df, a + i + N), hn::LoadU(df, b + i + N), s1);
  }
  for (; i + N <= n; i += N) s0 = hn::MulAdd(hn::LoadU(df, a + i), hn::LoadU(df, b + i), s0);
  float s = hn::GetLane(hn::SumOfLanes(df, hn::Add(s0, s1)));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

void Axpy(float a, const float* HWY_RESTRICT x, float* HWY_RESTRICT y, int64_t n) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const VF av = hn::Set(df, a);
  int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::MulAdd(av, hn::LoadU(df, x + i), hn::LoadU(df, y + i)), df, y + i);
  for (; i < n; ++i) y[i] += a * x[i];
}

float Sum(const float* HWY_RESTRICT x, int64_t n) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  // Four accumulators: the loop is limited by memory reads, not add latency.
  VF s0 = hn::Zero(df), s1 = hn::Zero(df), s2 = hn::Zero(df), s3 = hn::Zero(df);
  int64_t i = 0;
  // Prefetch 2 KiB ahead: a plain stream stalls at each 4 KiB page, where the
  // hardware prefetcher stops; the matrix kernels prefetch the same way.
  for (; i + 4 * N <= n; i += 4 * N) {
    for (int64_t line = 0; line < 4 * N; line += 16) __builtin_prefetch(x + i + 512 + line, 0, 0);
    s0 = hn::Add(s0, hn::LoadU(df, x + i));
    s1 = hn::Add(s1, hn::LoadU(df, x + i + N));
    s2 = hn::Add(s2, hn::LoadU(df, x + i + 2 * N));
    s3 = hn::Add(s3, hn::LoadU(df, x + i + 3 * N));
  }
  float s = hn::GetLane(hn::SumOfLanes(df, hn::Add(hn::Add(s0, s1), hn::Add(s2, s3))));
  for (; i < n; ++i) s += x[i];
  return s;
}

// Whether the target dispatched to is AVX-512: the BF16 products' condition,
// read through the dispatch table (hwy::SupportedTargets() runs CPUID on every
// call, a trap to the hypervisor on a virtual machine: 5x slower decode).
bool TargetIsAvx512() { return HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3; }

float RmsNorm(float* out, const float* x, const float* HWY_RESTRICT w, int64_t n, float eps) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  // The sum of squares in double (each square is exact there), in one order on
  // every target: the inverse norm, and so the output, is the same bit for bit
  // on every SIMD target, and within an eps of the exact value whatever n.
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += double(x[i]) * double(x[i]);
  const float inv = float(1.0 / std::sqrt(ss / double(n) + double(eps)));
  const VF iv = hn::Set(df, inv);
  int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::Mul(hn::Mul(hn::LoadU(df, x + i), iv), hn::LoadU(df, w + i)), df, out + i);
  for (; i < n; ++i) out[i] = x[i] * inv * w[i];
  return inv;
}

}  // namespace HWY_NAMESPACE
}  // namespace flora
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace flora::ops {

HWY_EXPORT(MatmulRows);
HWY_EXPORT(MatmulCols);
HWY_EXPORT(Dot);
HWY_EXPORT(Axpy);
HWY_EXPORT(RmsNorm);
HWY_EXPORT(Sum);
HWY_EXPORT(TargetIsAvx512);

namespace {
std::atomic<bool> g_bf16_products{false};
}  // namespace

void set_bf16_products(bool on) { g_bf16_products.store(on, std::memory_order_relaxed); }
bool bf16_products() { return g_bf16_products.load(std::memory_order_relaxed); }
bool bf16_dot_available() {
  return detail::cpu_has_bf16_dot() && HWY_DYNAMIC_DISPATCH(TargetIsAvx512)();
}
bool bf16_products_active(DType weights) {
  return weights == DType::BF16 && bf16_products() && bf16_dot_available();
}

std::string products_name() { return bf16_products_active(DType::BF16) ? "bf16" : "f32"; }

void size_activations_bf16(int64_t T, int64_t K, Bf16Activations& out) { detail::size_bf16(T, K, out); }
void round_activations_bf16_rows(const float* x, int64_t ldx, int64_t t0, int64_t t1, Bf16Activations& out) {
  detail::round_rows_to_bf16(x, ldx, t0, t1, out);
}
void round_activations_bf16(const float* x, int64_t ldx, int64_t T, int64_t K, Bf16Activations& out) {
  size_activations_bf16(T, K, out);
  round_activations_bf16_rows(x, ldx, 0, T, out);
}

void matmul_rows(float* y, int64_t ldy, const Bf16Activations& x, const MatrixRef& w, int64_t row0, int64_t row1,
                 bool accumulate) {
  if (!bf16_products_active(w.dtype))
    fail("matrix product: BF16 activations need BF16 products on a CPU with AVX512_BF16 (weights {}, asked for: {})",
         dtype_name(w.dtype), bf16_products() ? "yes" : "no");
  if (x.K != w.cols) fail("matrix product: activations of {} columns for weights of {}", x.K, w.cols);
  const int64_t ldw = w.row_bytes() / 2;
  detail::bf16_matmul_rows(y, ldy, x, static_cast<const uint16_t*>(w.data), ldw, row0, row1, accumulate);
}

void matmul_rows(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t T, const MatrixRef& w, int64_t row0,
                 int64_t row1, bool accumulate) {
  if (is_quantized(w.dtype)) return detail::quant_matmul_rows(y, ldy, x, ldx, T, w, row0, row1, accumulate);
  if (bf16_products_active(w.dtype)) {
    thread_local Bf16Activations rounded;
    round_activations_bf16(x, ldx, T, w.cols, rounded);
    return matmul_rows(y, ldy, rounded, w, row0, row1, accumulate);
  }
  HWY_DYNAMIC_DISPATCH(MatmulRows)(y, ldy, x, ldx, T, w, row0, row1, accumulate);
}
void matmul_cols(float* y, int64_t ldy, const Bf16Activations& x, const MatrixRef& w, int64_t col0, int64_t col1,
                 bool accumulate) {
  if (!bf16_products_active(w.dtype))
    fail("transposed matrix product: BF16 activations need BF16 products on a CPU with AVX512_BF16 (weights {}, "
         "asked for: {})",
         dtype_name(w.dtype), bf16_products() ? "yes" : "no");
  if (x.K != w.rows) fail("transposed matrix product: activations of {} columns for weights of {} rows", x.K, w.rows);
  const int64_t ldw = w.row_bytes() / 2;
  detail::bf16_matmul_cols(y, ldy, x, static_cast<const uint16_t*>(w.data), ldw, col0, col1, accumulate);
}

void matmul_cols(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t T, const MatrixRef& w, int64_t col0,
                 int64_t col1, bool accumulate) {
  if (is_quantized(w.dtype)) return detail::quant_matmul_cols(y, ldy, x, ldx, T, w, col0, col1, accumulate);
  if (bf16_products_active(w.dtype)) {
    thread_local Bf16Activations rounded;
    round_activations_bf16(x, ldx, T, w.rows, rounded);
    return matmul_cols(y, ldy, rounded, w, col0, col1, accumulate);
  }
  HWY_DYNAMIC_DISPATCH(MatmulCols)(y, ldy, x, ldx, T, w, col0, col1, accumulate);
}
float dot(const float* a, const float* b, int64_t n) { return HWY_DYNAMIC_DISPATCH(Dot)(a, b, n); }
float sum(const float* x, int64_t n) { return HWY_DYNAMIC_DISPATCH(Sum)(x, n); }
void axpy(float a, const float* x, float* y, int64_t n) { HWY_DYNAMIC_DISPATCH(Axpy)(a, x, y, n); }
float rmsnorm(float* out, const float* x, const float* w, int64_t n, float eps) {
  return HWY_DYNAMIC_DISPATCH(RmsNorm)(out, x, w, n, eps);
}

std::string simd_target_name(int64_t target) { return hwy::TargetName(target); }

std::string simd_target_name() {
  // The best target that is both supported and compiled in is the one dispatched to.
  const auto targets = hwy::SupportedAndGeneratedTargets();
  return targets.empty() ? "none" : hwy::TargetName(targets.front());
}

namespace {

// FLORA_CPU caps the dispatch target, so that one host can run (and test) the
// code paths of lesser CPUs. Highway orders x86 targets best first with the
// lowest bit, so the targets at or below a cap are the bits >= the cap's bit.
struct CpuCap {
  std::string name = "native";
  int64_t mask = 0;  // the supported targets allowed; 0 = no cap
};

const CpuCap& cpu_cap() {
  static const CpuCap cap = [] {
    CpuCap c;
    const char* env = std::getenv("FLORA_CPU");
    if (!env || !*env || std::strcmp(env, "native") == 0) return c;
    static const std::pair<const char*, int64_t> kNames[] = {
        {"avx512", HWY_AVX3}, {"avx2", HWY_AVX2}, {"sse4", HWY_SSE4}, {"scalar", HWY_SCALAR}};
    int64_t bit = 0;
    for (const auto& [name, b] : kNames)
      if (std::strcmp(env, name) == 0) bit = b;
    if (!bit) {
      // Read before main (the first kernel call may be in a test's set-up), so
      // it cannot throw flora::Error to a handler: one line and exit.
      std::fprintf(stderr, "flora: FLORA_CPU='%s': expected native, avx512, avx2, sse4 or scalar\n", env);
      std::exit(2);
    }
    hwy::SetSupportedTargetsForTest(0);
    c.name = env;
    c.mask = hwy::SupportedTargets() & HWY_TARGETS & ~(bit - 1);
    if (c.mask == 0) c.mask = HWY_STATIC_TARGET;
    return c;
  }();
  return cap;
}

// Applies the cap before any kernel is dispatched (static initialisation of the
// library that holds every kernel), so binaries and tests honour it alike.
[[maybe_unused]] const bool kCapApplied = [] {
  if (cpu_cap().mask) {
    hwy::SetSupportedTargetsForTest(cpu_cap().mask);
    hwy::GetChosenTarget().Update(hwy::SupportedTargets());
  }
  return true;
}();

}  // namespace

std::string cpu_cap_name() { return cpu_cap().name; }

std::vector<int64_t> simd_targets_available() { return hwy::SupportedAndGeneratedTargets(); }

void set_simd_target_for_test(int64_t target) {
  hwy::SetSupportedTargetsForTest(target ? target : cpu_cap().mask);
  hwy::GetChosenTarget().Update(hwy::SupportedTargets());
}

}  // namespace flora::ops
#endif  // HWY_ONCE
