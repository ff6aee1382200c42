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
#include <vector>

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

void size_bf16(int64_t T, int64_t K, Bf16Activations& out) {
  out.T = T, out.K = K, out.ld = (K + 31) / 32 * 32;
  out.v.resize(static_cast<size_t>(T * out.ld));
}

void round_rows_to_bf16(const float* x, int64_t ldx, int64_t t0, int64_t t1, Bf16Activations& out) {
  const int64_t K = out.K;
  for (int64_t t = t0; t < t1; ++t) {
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

namespace {

// matmul_cols' pass: pairs of w's rows, 256 rows as the f32 kernel's passes,
// so a pass's pairs of a 128-column chunk (64 KiB) stay in L2 while every
// token passes over them.
constexpr int64_t kColPairs = 128;
constexpr int kColTok = 4, kColVecs = 4;  // register block: 4 tokens x 4 vectors of 16 columns

// The pass's weights as bf16 pairs, the layout vdpbf16ps multiplies:
// tile[p * ldt + c] = w[2p, c] (low half) | w[2p + 1, c] (high half), for the
// nrows rows of w (row stride ldw) and columns c < n; a missing last odd row
// and the columns n..ldt are zeros.
FLORA_BF16_TARGET void pair_rows(const uint16_t* w, int64_t ldw, int64_t nrows, int64_t n, uint32_t* tile,
                                 int64_t ldt) {
  for (int64_t p = 0; 2 * p < nrows; ++p) {
    const uint16_t* a = w + 2 * p * ldw;
    const uint16_t* b = 2 * p + 1 < nrows ? a + ldw : nullptr;
    uint32_t* out = tile + p * ldt;
    int64_t c = 0;
    if (b)
      for (; c + 16 <= n; c += 16) {
        // unpack pairs columns 0-3 and 8-11 (lo), 4-7 and 12-15 (hi); the
        // lane permutes put them back in column order.
        const __m256i va = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + c));
        const __m256i vb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + c));
        const __m256i lo = _mm256_unpacklo_epi16(va, vb), hi = _mm256_unpackhi_epi16(va, vb);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + c), _mm256_permute2x128_si256(lo, hi, 0x20));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + c + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
      }
    for (; c < n; ++c) out[c] = a[c] | (b ? uint32_t{b[c]} << 16 : 0u);
    for (; c < ldt; ++c) out[c] = 0;
  }
}

// kTok tokens x kVec vectors of 16 columns over np pairs: each accumulator
// lane is one column's chain, pair after pair, from y (from_y) or zero. The
// last vector holds `last` columns (masked loads and stores; its lanes past
// them multiply the tile's zero padding).
template <int kTok, int kVec>
FLORA_BF16_TARGET inline void cols_block(const uint32_t* x, int64_t ldx, const uint32_t* tile, int64_t ldt,
                                         int64_t np, float* y, int64_t ldy, bool from_y, int last) {
  const __mmask16 full = 0xffff, tail = static_cast<__mmask16>((1u << last) - 1);
  __m512 acc[kTok][kVec];
#pragma GCC unroll 8
  for (int t = 0; t < kTok; ++t)
#pragma GCC unroll 8
    for (int v = 0; v < kVec; ++v)
      acc[t][v] = from_y ? _mm512_maskz_loadu_ps(v == kVec - 1 ? tail : full, y + t * ldy + 16 * v) : _mm512_setzero_ps();
  for (int64_t p = 0; p < np; ++p) {
    __m512i wv[kVec];
#pragma GCC unroll 8
    for (int v = 0; v < kVec; ++v) wv[v] = _mm512_loadu_si512(tile + p * ldt + 16 * v);
#pragma GCC unroll 8
    for (int t = 0; t < kTok; ++t) {
      const __m512i xv = _mm512_set1_epi32(static_cast<int>(x[t * ldx + p]));
#pragma GCC unroll 8
      for (int v = 0; v < kVec; ++v)
        acc[t][v] = _mm512_dpbf16_ps(acc[t][v], reinterpret_cast<__m512bh>(wv[v]), reinterpret_cast<__m512bh>(xv));
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < kTok; ++t)
#pragma GCC unroll 8
    for (int v = 0; v < kVec; ++v) _mm512_mask_storeu_ps(y + t * ldy + 16 * v, v == kVec - 1 ? tail : full, acc[t][v]);
}

template <int kVec>
FLORA_BF16_TARGET inline void cols_all_tokens(const uint32_t* x, int64_t ldx, int64_t T, const uint32_t* tile,
                                              int64_t ldt, int64_t np, float* y, int64_t ldy, bool from_y, int last) {
  int64_t t = 0;
  for (; t + kColTok <= T; t += kColTok)
    cols_block<kColTok, kVec>(x + t * ldx, ldx, tile, ldt, np, y + t * ldy, ldy, from_y, last);
  for (; t < T; ++t) cols_block<1, kVec>(x + t * ldx, ldx, tile, ldt, np, y + t * ldy, ldy, from_y, last);
}

}  // namespace

FLORA_BF16_TARGET void bf16_matmul_cols(float* y, int64_t ldy, const Bf16Activations& xa, const uint16_t* w,
                                        int64_t ldw, int64_t col0, int64_t col1, bool accumulate) {
  const int64_t R = xa.K, T = xa.T, n = col1 - col0;
  if (n <= 0) return;
  if (R == 0) {  // an empty sum
    if (!accumulate)
      for (int64_t t = 0; t < T; ++t) std::fill(y + t * ldy + col0, y + t * ldy + col1, 0.0f);
    return;
  }
  // x's rows as pairs: element p of a row is its values 2p, 2p + 1 (ld is even, zeros past R).
  const uint32_t* x = reinterpret_cast<const uint32_t*>(xa.v.data());
  const int64_t ldx = xa.ld / 2, ldt = (n + 15) / 16 * 16;
  thread_local std::vector<uint32_t> tile;
  tile.resize(static_cast<size_t>(kColPairs * ldt));
  for (int64_t r0 = 0; r0 < R; r0 += 2 * kColPairs) {
    const int64_t nr = std::min(2 * kColPairs, R - r0), np = (nr + 1) / 2;
    const bool from_y = accumulate || r0 > 0;
    pair_rows(w + r0 * ldw + col0, ldw, nr, n, tile.data(), ldt);
    for (int64_t t0 = 0; t0 < T; t0 += kTileTokens) {
      const int64_t tn = std::min(kTileTokens, T - t0);
      const uint32_t* xt = x + t0 * ldx + r0 / 2;
      float* yt = y + t0 * ldy + col0;
      int64_t c = 0;
      for (; c + 16 * kColVecs <= n; c += 16 * kColVecs)
        cols_all_tokens<kColVecs>(xt, ldx, tn, tile.data() + c, ldt, np, yt + c, ldy, from_y, 16);
      for (; c < n; c += 16)
        cols_all_tokens<1>(xt, ldx, tn, tile.data() + c, ldt, np, yt + c, ldy, from_y,
                           static_cast<int>(std::min<int64_t>(16, n - c)));
    }
  }
}

}  // namespace flora::ops::detail
