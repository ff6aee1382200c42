// BF16 dot products (AVX512_BF16's vdpbf16ps) for matmul_rows of BF16
// weights, when the process asks for them (ops::set_bf16_products). Highway
// 1.0.3 has no target with this instruction (no AVX3_ZEN4/AVX3_SPR), so this
// file is plain intrinsics under a target attribute, entered only after a
// CPUID check and only while the dispatcher's target is AVX-512 (FLORA_CPU=avx2
// and the tests' forced targets take the f32 kernels as before).
//
// One vdpbf16ps multiplies 32 bf16 pairs into 16 f32 lanes (two products per
// lane): twice an f32 FMA's products per instruction, with no widening of the
// weights, which are read as stored. The price is the activations, rounded to
// bf16 (8 significant bits) once per product input (ops::Bf16Activations).
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "ops/bf16_kernels.h"
#include "util/dtype.h"

#define FLORA_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

// GCC 12's AVX-512 headers fill the unused operand of masked builtins with
// _mm512_undefined_*(), which -Wuninitialized reports in every function that
// inlines them (_mm512_srli_epi32, _mm512_reduce_add_ps): a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace flora::ops::detail {

bool cpu_has_bf16_dot() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
  }();
  return has;
}

namespace {

// One step of 32 columns: acc[r][c] += the pairs of weight vector wv[r] and
// token c's inputs at column k.
template <int kRows, int kCols>
FLORA_BF16_TARGET inline void dot_step(__m512 (&acc)[kRows][kCols], const __m512i (&wv)[kRows], const uint16_t* x,
                                       int64_t ldx, int64_t k) {
#pragma GCC unroll 8
  for (int c = 0; c < kCols; ++c) {
    const __m512i xv = _mm512_loadu_si512(x + c * ldx + k);
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r)
      acc[r][c] = _mm512_dpbf16_ps(acc[r][c], reinterpret_cast<__m512bh>(wv[r]), reinterpret_cast<__m512bh>(xv));
  }
}

// Register block: kRows weight rows x kCols tokens, 16 accumulators on
// AVX-512's 32 registers (plus 4 weight vectors and 1 input vector). Each
// accumulator lane i sums, per 32 columns k..k+31, the pairs 2i and 2i+1; the
// row's tail (K mod 32 columns) is a masked load of the weights (zeros beyond
// K) against the input's zero padding, so every (row, token) chain is the
// same instructions whatever T, the block it falls in or the row range.
// prefetch: the next block's rows, one 64-byte line per row per step (decode).
template <int kRows, int kCols>
FLORA_BF16_TARGET inline void dot_block(const uint16_t* x, int64_t ldx, const uint16_t* w, int64_t ldw, int64_t K,
                                        float* y, int64_t ldy, bool accumulate, const uint16_t* prefetch) {
  __m512 acc[kRows][kCols];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < kCols; ++c) acc[r][c] = _mm512_setzero_ps();
  __m512i wv[kRows];
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    if (prefetch) {
#pragma GCC unroll 8
      for (int r = 0; r < kRows; ++r) __builtin_prefetch(prefetch + r * ldw + k, 0, 0);
    }
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) wv[r] = _mm512_loadu_si512(w + r * ldw + k);
    dot_step<kRows, kCols>(acc, wv, x, ldx, k);
  }
  if (k < K) {
    const __mmask32 tail = static_cast<__mmask32>((uint64_t{1} << (K - k)) - 1);
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) wv[r] = _mm512_maskz_loadu_epi16(tail, w + r * ldw + k);
    dot_step<kRows, kCols>(acc, wv, x, ldx, k);
  }
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < kCols; ++c) {
      const float s = _mm512_reduce_add_ps(acc[r][c]);
      float& out = y[c * ldy + r];
      out = accumulate ? out + s : s;
    }
}

constexpr int kBlockRows = 4, kBlockCols = 4;
// Tokens per tile: the tile's inputs (64 x K bf16, 256 KiB at K = 2048) stay
// in L2 while every weight row block of the slice passes over them once.
constexpr int64_t kTileTokens = 64;
// Tiles of at most this many tokens (batched decode) prefetch the next row
// block, as ops/kernels.cpp's do; prefill's tiles are compute-bound.
constexpr int64_t kPrefetchTokens = 16;

// prefetch: the next block's rows, passed to the first block of tokens (the
// pass that reads this block's rows from memory; the others find them in cache).
template <int kRows>
FLORA_BF16_TARGET inline void rows_all_tokens(const uint16_t* x, int64_t ldx, int64_t T, const uint16_t* w,
                                              int64_t ldw, int64_t K, float* y, int64_t ldy, bool accumulate,
                                              const uint16_t* prefetch = nullptr) {
  int64_t t = 0;
  for (; t + kBlockCols <= T; t += kBlockCols, prefetch = nullptr)
    dot_block<kRows, kBlockCols>(x + t * ldx, ldx, w, ldw, K, y + t * ldy, ldy, accumulate, prefetch);
  for (; t < T; ++t, prefetch = nullptr)
    dot_block<kRows, 1>(x + t * ldx, ldx, w, ldw, K, y + t * ldy, ldy, accumulate, prefetch);
}

// f32 -> bf16, round to nearest even, NaN kept (quiet): f32_to_bf16's bits,
// 16 lanes at a time. vcvtneps2bf16 is not used: it flushes subnormals.
FLORA_BF16_TARGET void round_row(const float* x, int64_t K, uint16_t* out) {
  const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff);
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
  const __m512i quiet = _mm512_set1_epi32(0x400000);
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    const __m512i u = _mm512_castps_si512(_mm512_loadu_ps(x + k));
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), one);
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(bias, lsb));
    const __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, abs_mask), inf);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(u, quiet));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k), _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16)));
  }
  for (; k < K; ++k) out[k] = f32_to_bf16(x[k]);
}

}  // namespace

void round_to_bf16(const float* x, int64_t ldx, int64_t T, int64_t K, Bf16Activations& out) {
  out.T = T, out.K = K, out.ld = (K + 31) / 32 * 32;
  out.v.resize(static_cast<size_t>(T * out.ld));
  for (int64_t t = 0; t < T; ++t) {
    uint16_t* row = out.v.data() + t * out.ld;
    if (cpu_has_bf16_dot())
      round_row(x + t * ldx, K, row);
    else
      for (int64_t k = 0; k < K; ++k) row[k] = f32_to_bf16(x[t * ldx + k]);
    std::fill(row + K, row + out.ld, uint16_t{0});
  }
}

FLORA_BF16_TARGET void bf16_matmul_rows(float* y, int64_t ldy, const Bf16Activations& xa, const uint16_t* w,
                                        int64_t ldw, int64_t row0, int64_t row1, bool accumulate) {
  const uint16_t* x = xa.v.data();
  const int64_t ldx = xa.ld, K = xa.K, T = xa.T;
  if (T == 1) {  // decode: memory-bound, stream the rows with prefetch
    int64_t r = row0;
    for (; r + kBlockRows <= row1; r += kBlockRows) {
      const uint16_t* next = r + 2 * kBlockRows <= row1 ? w + (r + kBlockRows) * ldw : nullptr;
      dot_block<kBlockRows, 1>(x, ldx, w + r * ldw, ldw, K, y + r, ldy, accumulate, next);
    }
    for (; r < row1; ++r) dot_block<1, 1>(x, ldx, w + r * ldw, ldw, K, y + r, ldy, accumulate, nullptr);
    return;
  }
  for (int64_t t0 = 0; t0 < T; t0 += kTileTokens) {
    const int64_t tn = std::min(kTileTokens, T - t0);
    const uint16_t* xt = x + t0 * ldx;
    float* yt = y + t0 * ldy;
    int64_t r = row0;
    for (; r + kBlockRows <= row1; r += kBlockRows) {
      const uint16_t* next =
          tn <= kPrefetchTokens && r + 2 * kBlockRows <= row1 ? w + (r + kBlockRows) * ldw : nullptr;
      rows_all_tokens<kBlockRows>(xt, ldx, tn, w + r * ldw, ldw, K, yt + r, ldy, accumulate, next);
    }
    for (; r < row1; ++r) rows_all_tokens<1>(xt, ldx, tn, w + r * ldw, ldw, K, yt + r, ldy, accumulate);
  }
}

}  // namespace flora::ops::detail
