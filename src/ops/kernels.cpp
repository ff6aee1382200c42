// SIMD kernels of ops.h, compiled once per Highway target and dispatched at run
// time. Weights are read in their stored dtype and widened to f32 in registers;
// accumulation is in f32.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/kernels.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "ops/ops.h"
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

// Scalar widening for the K tail (fewer than one vector of elements left).
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

template <int kRows, typename TW>
HWY_INLINE void DotRowsAllCols(const float* x, int64_t ldx, int64_t T, const TW* w, int64_t ldw, int64_t K, float* y,
                               int64_t ldy, bool accumulate) {
  int64_t t = 0;
  for (; t + kBlockCols <= T; t += kBlockCols)
    DotBlock<kRows, kBlockCols>(x + t * ldx, ldx, w, ldw, K, y + t * ldy, ldy, accumulate);
  for (; t < T; ++t) DotBlock<kRows, 1>(x + t * ldx, ldx, w, ldw, K, y + t * ldy, ldy, accumulate);
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
    for (; r + kBlockRows <= row1; r += kBlockRows)
      DotRowsAllCols<kBlockRows>(xt, ldx, tn, w + r * ldw, ldw, K, yt + r, ldy, accumulate);
    for (; r < row1; ++r) DotRowsAllCols<1>(xt, ldx, tn, w + r * ldw, ldw, K, yt + r, ldy, accumulate);
  }
}

void MatmulRows(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t T, const MatrixRef& w, int64_t row0,
                int64_t row1, bool accumulate) {
  switch (w.dtype) {
    case DType::BF16:
      MatmulRowsT(y, ldy, x, ldx, T, static_cast<const hwy::bfloat16_t*>(w.data), w.row_stride(), w.cols, row0, row1,
                  accumulate);
      break;
    case DType::F16:
      MatmulRowsT(y, ldy, x, ldx, T, static_cast<const hwy::float16_t*>(w.data), w.row_stride(), w.cols, row0, row1,
                  accumulate);
      break;
    case DType::F32:
      MatmulRowsT(y, ldy, x, ldx, T, static_cast<const float*>(w.data), w.row_stride(), w.cols, row0, row1, accumulate);
      break;
    default:  // a format without a kernel must never be read as another one
      fail("matrix product: weights of dtype {} have no kernel (expected F32, F16 or BF16)", dtype_name(w.dtype));
  }
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

void RmsNorm(float* out, const float* x, const float* HWY_RESTRICT w, int64_t n, float eps) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const float inv = 1.0f / std::sqrt(Dot(x, x, n) / static_cast<float>(n) + eps);
  const VF iv = hn::Set(df, inv);
  int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::Mul(hn::Mul(hn::LoadU(df, x + i), iv), hn::LoadU(df, w + i)), df, out + i);
  for (; i < n; ++i) out[i] = x[i] * inv * w[i];
}

}  // namespace HWY_NAMESPACE
}  // namespace flora
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace flora::ops {

HWY_EXPORT(MatmulRows);
HWY_EXPORT(Dot);
HWY_EXPORT(Axpy);
HWY_EXPORT(RmsNorm);
HWY_EXPORT(Sum);

void matmul_rows(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t T, const MatrixRef& w, int64_t row0,
                 int64_t row1, bool accumulate) {
  HWY_DYNAMIC_DISPATCH(MatmulRows)(y, ldy, x, ldx, T, w, row0, row1, accumulate);
}
float dot(const float* a, const float* b, int64_t n) { return HWY_DYNAMIC_DISPATCH(Dot)(a, b, n); }
float sum(const float* x, int64_t n) { return HWY_DYNAMIC_DISPATCH(Sum)(x, n); }
void axpy(float a, const float* x, float* y, int64_t n) { HWY_DYNAMIC_DISPATCH(Axpy)(a, x, y, n); }
void rmsnorm(float* out, const float* x, const float* w, int64_t n, float eps) {
  HWY_DYNAMIC_DISPATCH(RmsNorm)(out, x, w, n, eps);
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
