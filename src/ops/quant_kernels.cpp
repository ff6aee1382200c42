// SIMD kernels of the block formats (layouts in ops/quant.h), compiled once per
// Highway target like ops/kernels.cpp and reached through ops::matmul_rows,
// ops::matmul_cols and ops::dequantize_tile.
//
// Two kinds of product, for two contracts (ops.h):
//   - matmul_rows (the forward): integer dot products, as llama.cpp computes
//     them. The input is rounded to 8-bit groups once (round_activations), and
//     each weight block meets a token's group as exact int32 sums of byte
//     products (maddubs / madd on x86), scaled in f32 at the end of the block.
//     Decode (T = 1) takes 4 rows at a time with the next 4 prefetched; batches
//     unpack a row's blocks once per 4 tokens. Every (row, token) pair runs the
//     same operations, so the rows of a batch are those of decode bit for bit.
//   - matmul_cols (training's input gradients) and dequantize_tile: one piece
//     of code per format widens a block, Format::Visit handing each vector of
//     the block's values, as f32, to a callback. The values are those of
//     dequantize_row (ggml's dequantize_row_*) bit for bit: the same products
//     and differences of f32 scales and small integers, each rounded once --
//     this file is compiled with -ffp-contract=off (CMakeLists.txt), so that
//     d * q - m is never fused into one rounding. matmul_cols widens tiles of
//     rows into f32 and runs the F32 transposed kernel, whose chain guarantee
//     (ops.h) then holds with w[r, c] the dequantized value.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/quant_kernels.cpp"
#include "ops/quant_kernels.h"

#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <cstdint>
#include <cmath>
#include <cstring>
#include <limits>
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
using ops::ActivationBlocks;

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

// ---- integer products: rounded activations x blocks (matmul_rows)
//
// Per (weight row, token) pair and weight block b, the token's activations
// of the block (q, d: ActivationBlocks) meet the block's integer levels in
// exact int32 sums: isum = sum_i level_i q_i, the K-quants' sub-block scales
// folded in as integers (Q4_K's scale sc_j, Q6_K's int8 scale per 16). Then,
// in f32, acc = isum * (d_w * d_x) + acc, lane by lane, and (Q4_K) the mins'
// term m = (dmin * d_x) * sum_j m_j sums_j + m; the result is the sum of
// acc's lanes minus m. These operations are the same for every pair, in the
// same order, whatever the register block, so no result depends on T or on
// the rows beside it. Levels: Q8_0 its int8; Q4_0 nibble - 8; Q4_K the
// nibble (0..15); Q6_K its 6 bits - 32. Signed levels multiply as
// |level| * (q * sign(level)) so that the unsigned-by-signed byte product
// (maddubs) applies: |level| <= 128 and |q| <= 127 keep each pair's sum
// within int16.

// A weight row block and its token block: kR rows row_bytes apart, kT tokens.
struct IntTile {
  const uint8_t* w;  // the first row's first block
  int64_t row_bytes;
  const ActivationBlocks* a;
  int64_t t0;  // the first token
};

#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2
// f16 scales through F16C (every AVX2 CPU has it): exact, as load_f16, in one
// instruction instead of its dozen.
HWY_INLINE float F16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}
// The f16 at p and at p + 2 (Q4_K's d and dmin) as lanes 0 and 1.
HWY_INLINE __m128 F16x2(const uint8_t* p) {
  int32_t both;
  std::memcpy(&both, p, 4);
  return _mm_cvtph_ps(_mm_cvtsi32_si128(both));
}
// The 8 scales (lanes 0-7) and mins (8-15) of a Q4_K block as int16.
HWY_INLINE __m256i Q4KScalesMins(const uint8_t* blk) {
  uint32_t w[4];
  q4_k_scales_mins(blk + q4_k::kScales, w);
  return _mm256_cvtepu8_epi16(_mm_set_epi32(static_cast<int>(w[3]), static_cast<int>(w[2]), static_cast<int>(w[1]),
                                            static_cast<int>(w[0])));
}
// The int32 sum of the 4 lanes of v.
HWY_INLINE int32_t SumLanes(__m128i v) {
  v = _mm_add_epi32(v, _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 0, 3, 2)));
  return _mm_cvtsi128_si32(_mm_add_epi32(v, _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 3, 0, 1))));
}

#endif

#if HWY_TARGET == HWY_AVX3
// AVX-512: 64 bytes per vector, two 32-element groups (the lower 256 bits
// the first), int32 lanes of 4 products each; Q8_0 and Q4_0 take two blocks
// per step (the last alone when the row has an odd number).
struct IntAcc {
  __m512 v;
  float m;
};
HWY_INLINE IntAcc ZeroAcc() { return IntAcc{_mm512_setzero_ps(), 0.0f}; }
HWY_INLINE float Finish(const IntAcc& acc) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(acc.v), _mm512_extractf32x8_ps(acc.v, 1));
  const __m128 g = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  const __m128 q = _mm_add_ps(g, _mm_movehl_ps(g, g));
  return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q))) - acc.m;
}

HWY_INLINE __m256i Load32(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
HWY_INLINE __m512i Load64(const void* p) { return _mm512_loadu_si512(p); }
HWY_INLINE __m512i Halves(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }
HWY_INLINE __m512 HalvesPs(float lo, float hi) {
  return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(lo)), _mm256_set1_ps(hi), 1);
}
HWY_INLINE __m512i Ones16() { return _mm512_set1_epi16(1); }
// permutexvar indices: lane 0 to the lower half, lane 1 to the upper.
HWY_INLINE __m512i HalfIndex() { return _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0); }
// Signed levels as |level| and the lanes to negate q in: level * q = |level| * (q sign(level)).
struct Signed {
  __m512i abs;
  __mmask64 negative;
};
HWY_INLINE Signed SignedLevels(__m512i level) { return Signed{_mm512_abs_epi8(level), _mm512_movepi8_mask(level)}; }
HWY_INLINE __m512i MulSigned(const Signed& level, __m512i q) {
  return _mm512_maddubs_epi16(level.abs, _mm512_mask_sub_epi8(q, level.negative, _mm512_setzero_si512(), q));
}
HWY_INLINE void AddScaled(IntAcc& acc, __m512i isum, __m512 scale) {
  acc.v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc.v);
}
// The q of blocks [b, b + nb) of 32 (nb <= 2; zeros past them), of token t.
HWY_INLINE __m512i LoadQ(const ActivationBlocks& a, int64_t t, int64_t b, int64_t nb) {
  const int8_t* q = a.q.data() + t * a.K + b * 32;
  return nb == 2 ? Load64(q) : _mm512_zextsi256_si512(Load32(q));
}

// Q8_0 and Q4_0: blocks of 32, levels signed; levels(blk) gives the levels of
// blocks [b, b + nb) of a row as one vector (zeros past them).
template <int kR, int kT, class Levels>
HWY_INLINE void PairOfBlocks(const IntTile& tile, int64_t b, int64_t nb, int64_t kBytes, Levels&& levels,
                             IntAcc (&acc)[kR][kT]) {
  const ActivationBlocks& a = *tile.a;
  const int64_t groups = a.K / 32;
  // The scales of each half as vectors, a token's shared by the rows and a
  // row's by the tokens; their lane products are d_w * d_x of the half.
  __m512 dx[kT];
#pragma GCC unroll 4
  for (int j = 0; j < kT; ++j) {
    const int64_t t = tile.t0 + j;
    const float* d = a.d.data() + t * groups + b;  // the pair's scales (lane 1 zero for a last block alone)
    const __m128 pair = nb == 2 ? _mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(d)))
                                : _mm_load_ss(d);
    dx[j] = _mm512_permutexvar_ps(HalfIndex(), _mm512_castps128_ps512(pair));
  }
#pragma GCC unroll 4
  for (int i = 0; i < kR; ++i) {
    const uint8_t* blk = tile.w + i * tile.row_bytes + b * kBytes;
    const bool two = nb == 2;
    uint16_t h[2] = {0, 0};  // the two f16 scales (+0 past the blocks)
    std::memcpy(&h[0], blk, 2);
    if (two) std::memcpy(&h[1], blk + kBytes, 2);
    int32_t both;
    std::memcpy(&both, h, 4);
    const __m512 dw = _mm512_permutexvar_ps(HalfIndex(), _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128(both))));
    const Signed level = SignedLevels(levels(blk));
#pragma GCC unroll 4
    for (int j = 0; j < kT; ++j) {
      const __m512i isum = _mm512_madd_epi16(MulSigned(level, LoadQ(a, tile.t0 + j, b, nb)), Ones16());
      AddScaled(acc[i][j], isum, _mm512_mul_ps(dw, dx[j]));
    }
  }
}

struct IntQ8_0 {
  static constexpr bool kMins = false;
  static constexpr int64_t kStep = 2;
  static constexpr int64_t kElems = q8_0::kElems, kBytes = q8_0::kBytes;
  template <int kR, int kT>
  static HWY_INLINE void Block(const IntTile& tile, int64_t b, int64_t nb, IntAcc (&acc)[kR][kT]) {
    PairOfBlocks(
        tile, b, nb, kBytes,
        [nb](const uint8_t* blk) {
          return nb == 2 ? Halves(Load32(blk + q8_0::kQs), Load32(blk + kBytes + q8_0::kQs))
                         : _mm512_zextsi256_si512(Load32(blk + q8_0::kQs));
        },
        acc);
  }
};

struct IntQ4_0 {
  static constexpr bool kMins = false;
  static constexpr int64_t kStep = 2;
  static constexpr int64_t kElems = q4_0::kElems, kBytes = q4_0::kBytes;
  // The levels of the block at blk and, when `two`, of the next one (else zeros):
  // 128-bit lanes of elements 0-15 and 16-31 of each (low nibbles, then high).
  static HWY_INLINE __m512i Levels(const uint8_t* blk, bool two) {
    const __m128i first = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + q4_0::kQs));
    const __m128i second =
        two ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + kBytes + q4_0::kQs)) : _mm_setzero_si128();
    const __m256i raw = _mm256_set_m128i(second, first), low = _mm256_set1_epi8(0x0f);
    // Lanes (first low, second low, first high, second high), put in element order.
    const __m512i nibbles = Halves(_mm256_and_si256(raw, low), _mm256_and_si256(_mm256_srli_epi16(raw, 4), low));
    const __m512i ordered = _mm512_shuffle_i64x2(nibbles, nibbles, _MM_SHUFFLE(3, 1, 2, 0));
    const __m512i level = _mm512_sub_epi8(ordered, _mm512_set1_epi8(8));
    return two ? level : _mm512_zextsi256_si512(_mm512_castsi512_si256(level));
  }
  template <int kR, int kT>
  static HWY_INLINE void Block(const IntTile& tile, int64_t b, int64_t nb, IntAcc (&acc)[kR][kT]) {
    PairOfBlocks(tile, b, nb, kBytes, [nb](const uint8_t* blk) { return Levels(blk, nb == 2); }, acc);
  }
};

struct IntQ4_K {
  static constexpr bool kMins = true;
  static constexpr int64_t kStep = 1;
  static constexpr int64_t kElems = q4_k::kElems, kBytes = q4_k::kBytes;
  template <int kR, int kT>
  static HWY_INLINE void Block(const IntTile& tile, int64_t b, int64_t, IntAcc (&acc)[kR][kT]) {
    const ActivationBlocks& a = *tile.a;
    const int64_t groups = a.K / kElems, sub = a.K / 32;
    const __m256i low = _mm256_set1_epi8(0x0f);
#pragma GCC unroll 4
    for (int i = 0; i < kR; ++i) {
      const uint8_t* blk = tile.w + i * tile.row_bytes + b * kBytes;
      const __m256i sm = Q4KScalesMins(blk);
      const __m512i sm512 = _mm512_castsi256_si512(sm);
      const __m128i mins = _mm256_extracti128_si256(sm, 1);
      const __m128 d_dmin = F16x2(blk + q4_k::kD);
      const float d = _mm_cvtss_f32(d_dmin), dmin = _mm_cvtss_f32(_mm_movehdup_ps(d_dmin));
      __m512i isum[kT];
#pragma GCC unroll 4
      for (int j = 0; j < kT; ++j) isum[j] = _mm512_setzero_si512();
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) {
        // Elements 64 c ... 64 c + 63: sub-block 2 c in the low nibbles, 2 c + 1 in the high.
        const __m256i raw = Load32(blk + q4_k::kQs + 32 * c);
        const __m512i level = Halves(_mm256_and_si256(raw, low), _mm256_and_si256(_mm256_srli_epi16(raw, 4), low));
        const __m512i scale =
            _mm512_permutexvar_epi16(Halves(_mm256_set1_epi16(2 * c), _mm256_set1_epi16(2 * c + 1)), sm512);
#pragma GCC unroll 4
        for (int j = 0; j < kT; ++j) {
          const int8_t* q = a.q.data() + (tile.t0 + j) * a.K + b * kElems + 64 * c;
          isum[j] = _mm512_add_epi32(isum[j], _mm512_madd_epi16(_mm512_maddubs_epi16(level, Load64(q)), scale));
        }
      }
#pragma GCC unroll 4
      for (int j = 0; j < kT; ++j) {
        const int64_t t = tile.t0 + j;
        const float dx = a.d[t * groups + b];
        const __m128i sums = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a.sums.data() + t * sub + 8 * b));
        const int32_t m = SumLanes(_mm_madd_epi16(mins, sums));
        AddScaled(acc[i][j], isum[j], _mm512_set1_ps(d * dx));
        acc[i][j].m = (dmin * dx) * static_cast<float>(m) + acc[i][j].m;
      }
    }
  }
};

struct IntQ6_K {
  static constexpr bool kMins = false;
  static constexpr int64_t kStep = 1;
  static constexpr int64_t kElems = q6_k::kElems, kBytes = q6_k::kBytes;
  template <int kR, int kT>
  static HWY_INLINE void Block(const IntTile& tile, int64_t b, int64_t, IntAcc (&acc)[kR][kT]) {
    const ActivationBlocks& a = *tile.a;
    const int64_t groups = a.K / kElems;
    const __m512i low = _mm512_set1_epi8(0x0f), pair = _mm512_set1_epi8(3), bias = _mm512_set1_epi8(32);
    // int16 lane l of the product takes the scale of 16-element sub-block l / 8.
    const __m512i spread = _mm512_set_epi16(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 0,
                                            0, 0, 0, 0, 0, 0, 0);
#pragma GCC unroll 4
    for (int i = 0; i < kR; ++i) {
      const uint8_t* blk = tile.w + i * tile.row_bytes + b * kBytes;
      const float d = F16(blk + q6_k::kD);
      __m512i isum[kT];
#pragma GCC unroll 4
      for (int j = 0; j < kT; ++j) isum[j] = _mm512_setzero_si512();
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        const __m512i bytes = Load64(blk + q6_k::kQl + 64 * h);
        const __m256i top_bits = Load32(blk + q6_k::kQh + 32 * h);
#pragma GCC unroll 2
        for (int k = 0; k < 4; k += 2) {
          // Elements 128 h + 32 k ... + 63 (quarters k and k + 1 of the half, ops/quant.h):
          // ql[64 h ...] low nibbles for k = 0, high for k = 2; qh's bit pairs k and k + 1.
          const __m512i nibble = k == 0 ? _mm512_and_si512(bytes, low) : _mm512_and_si512(_mm512_srli_epi16(bytes, 4), low);
          const __m512i top = _mm512_and_si512(
              Halves(_mm256_srli_epi16(top_bits, 2 * k), _mm256_srli_epi16(top_bits, 2 * k + 2)), pair);
          const Signed level =
              SignedLevels(_mm512_sub_epi8(_mm512_or_si512(nibble, _mm512_slli_epi16(top, 4)), bias));
          int32_t sc;  // the 4 int8 scales
          std::memcpy(&sc, blk + q6_k::kScales + 8 * h + 2 * k, 4);
          const __m128i sc4 = _mm_cvtepi8_epi16(_mm_cvtsi32_si128(sc));
          const __m512i scale = _mm512_permutexvar_epi16(spread, _mm512_castsi128_si512(sc4));
#pragma GCC unroll 4
          for (int j = 0; j < kT; ++j) {
            const int8_t* q = a.q.data() + (tile.t0 + j) * a.K + b * kElems + 128 * h + 32 * k;
            isum[j] = _mm512_add_epi32(isum[j], _mm512_madd_epi16(MulSigned(level, Load64(q)), scale));
          }
        }
      }
#pragma GCC unroll 4
      for (int j = 0; j < kT; ++j) AddScaled(acc[i][j], isum[j], _mm512_set1_ps(d * a.d[(tile.t0 + j) * groups + b]));
    }
  }
};
#elif HWY_TARGET == HWY_AVX2
// AVX2: 32 bytes per vector, one 32-element group, int32 lanes of 4 products
// each.
struct IntAcc {
  __m256 v;
  float m;
};
HWY_INLINE IntAcc ZeroAcc() { return IntAcc{_mm256_setzero_ps(), 0.0f}; }

HWY_INLINE __m256i Load32(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
HWY_INLINE __m256i Ones16() { return _mm256_set1_epi16(1); }
// int16 lanes: pairs of level * q, levels signed.
HWY_INLINE __m256i MulSigned(__m256i level, __m256i q) {
  return _mm256_maddubs_epi16(_mm256_sign_epi8(level, level), _mm256_sign_epi8(q, level));
}
HWY_INLINE void AddScaled(IntAcc& acc, __m256i isum, float scale) {
  acc.v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(scale), acc.v);
}
HWY_INLINE float Finish(const IntAcc& acc) {
  const __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc.v), _mm256_extractf128_ps(acc.v, 1));
  const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
  return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q))) - acc.m;
}

// Q8_0 and Q4_0: blocks of 32, levels signed; levels(blk) gives a block's 32.
template <int kR, int kT, class Levels>
HWY_INLINE void OneBlock(const IntTile& tile, int64_t b, int64_t kBytes, Levels&& levels, IntAcc (&acc)[kR][kT]) {
  const ActivationBlocks& a = *tile.a;
  const int64_t groups = a.K / 32;
#pragma GCC unroll 4
  for (int i = 0; i < kR; ++i) {
    const uint8_t* blk = tile.w + i * tile.row_bytes + b * kBytes;
    const float dw = F16(blk);  // both formats keep d first
    const __m256i level = levels(blk);
#pragma GCC unroll 4
    for (int j = 0; j < kT; ++j) {
      const int64_t t = tile.t0 + j;
      const __m256i p = MulSigned(level, Load32(a.q.data() + t * a.K + b * 32));
      AddScaled(acc[i][j], _mm256_madd_epi16(p, Ones16()), dw * a.d[t * groups + b]);
    }
  }
}

struct IntQ8_0 {
  static constexpr bool kMins = false;
  static constexpr int64_t kStep = 1;  // blocks per Block call
  static constexpr int64_t kElems = q8_0::kElems, kBytes = q8_0::kBytes;
  template <int kR, int kT>
  static HWY_INLINE void Block(const IntTile& tile, int64_t b, int64_t /*nb*/, IntAcc (&acc)[kR][kT]) {
    OneBlock(tile, b, kBytes, [](const uint8_t* blk) { return Load32(blk + q8_0::kQs); }, acc);
  }
};

struct IntQ4_0 {
  static constexpr bool kMins = false;
  static constexpr int64_t kStep = 1;
  static constexpr int64_t kElems = q4_0::kElems, kBytes = q4_0::kBytes;
  template <int kR, int kT>
  static HWY_INLINE void Block(const IntTile& tile, int64_t b, int64_t /*nb*/, IntAcc (&acc)[kR][kT]) {
    OneBlock(
        tile, b, kBytes,
        [](const uint8_t* blk) {
          const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + q4_0::kQs));
          const __m128i low = _mm_set1_epi8(0x0f);
          const __m256i nibbles =
              _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), low), _mm_and_si128(raw, low));
          return _mm256_sub_epi8(nibbles, _mm256_set1_epi8(8));
        },
        acc);
  }
};

struct IntQ4_K {
  static constexpr bool kMins = true;
  static constexpr int64_t kStep = 1;
  static constexpr int64_t kElems = q4_k::kElems, kBytes = q4_k::kBytes;
  template <int kR, int kT>
  static HWY_INLINE void Block(const IntTile& tile, int64_t b, int64_t /*nb*/, IntAcc (&acc)[kR][kT]) {
    const ActivationBlocks& a = *tile.a;
    const int64_t groups = a.K / kElems, sub = a.K / 32;
    const __m256i low = _mm256_set1_epi8(0x0f);
#pragma GCC unroll 4
    for (int i = 0; i < kR; ++i) {
      const uint8_t* blk = tile.w + i * tile.row_bytes + b * kBytes;
      const __m256i sm = Q4KScalesMins(blk);
      const __m256i scales = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sm));
      const __m128i mins = _mm256_extracti128_si256(sm, 1);
      const __m128 d_dmin = F16x2(blk + q4_k::kD);
      const float d = _mm_cvtss_f32(d_dmin), dmin = _mm_cvtss_f32(_mm_movehdup_ps(d_dmin));
      __m256i isum[kT];
#pragma GCC unroll 4
      for (int j = 0; j < kT; ++j) isum[j] = _mm256_setzero_si256();
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) {
        const __m256i raw = Load32(blk + q4_k::kQs + 32 * c);
        const __m256i lo = _mm256_and_si256(raw, low), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low);
        // Every int16 lane the scale of sub-block 2 c (s_lo) or 2 c + 1 (s_hi).
        const __m256i s_lo = _mm256_shuffle_epi8(scales, _mm256_set1_epi16(static_cast<int16_t>(0x0100 + 0x0202 * 2 * c)));
        const __m256i s_hi =
            _mm256_shuffle_epi8(scales, _mm256_set1_epi16(static_cast<int16_t>(0x0100 + 0x0202 * (2 * c + 1))));
#pragma GCC unroll 4
        for (int j = 0; j < kT; ++j) {
          const int8_t* q = a.q.data() + (tile.t0 + j) * a.K + b * kElems + 64 * c;
          const __m256i p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, Load32(q)), s_lo);
          const __m256i p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, Load32(q + 32)), s_hi);
          isum[j] = _mm256_add_epi32(isum[j], _mm256_add_epi32(p_lo, p_hi));
        }
      }
#pragma GCC unroll 4
      for (int j = 0; j < kT; ++j) {
        const int64_t t = tile.t0 + j;
        const float dx = a.d[t * groups + b];
        const __m128i sums = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a.sums.data() + t * sub + 8 * b));
        const int32_t m = SumLanes(_mm_madd_epi16(mins, sums));
        AddScaled(acc[i][j], isum[j], d * dx);
        acc[i][j].m = (dmin * dx) * static_cast<float>(m) + acc[i][j].m;
      }
    }
  }
};

struct IntQ6_K {
  static constexpr bool kMins = false;
  static constexpr int64_t kStep = 1;  // blocks per Block call
  static constexpr int64_t kElems = q6_k::kElems, kBytes = q6_k::kBytes;
  template <int kR, int kT>
  static HWY_INLINE void Block(const IntTile& tile, int64_t b, int64_t /*nb*/, IntAcc (&acc)[kR][kT]) {
    const ActivationBlocks& a = *tile.a;
    const int64_t groups = a.K / kElems;
    const __m256i low = _mm256_set1_epi8(0x0f), pair = _mm256_set1_epi8(3), bias = _mm256_set1_epi8(32);
#pragma GCC unroll 4
    for (int i = 0; i < kR; ++i) {
      const uint8_t* blk = tile.w + i * tile.row_bytes + b * kBytes;
      // The 16 int8 scales as int16 (lanes 0-15).
      const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + q6_k::kScales)));
      const float d = F16(blk + q6_k::kD);
      __m256i isum[kT];
#pragma GCC unroll 4
      for (int j = 0; j < kT; ++j) isum[j] = _mm256_setzero_si256();
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        const __m256i top_bits = Load32(blk + q6_k::kQh + 32 * h);
        // The half's 8 scales in both 128-bit lanes, for the byte shuffles below.
        const __m256i half_scales = _mm256_broadcastsi128_si256(h == 0 ? _mm256_castsi256_si128(sc16)
                                                                       : _mm256_extracti128_si256(sc16, 1));
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) {
          // Elements 128 h + 32 k + l, l < 32 (the layout of ops/quant.h).
          const __m256i bytes = Load32(blk + q6_k::kQl + 64 * h + 32 * (k & 1));
          const __m256i nibble = k < 2 ? _mm256_and_si256(bytes, low) : _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low);
          const __m256i top = _mm256_and_si256(_mm256_srli_epi16(top_bits, 2 * k), pair);
          const __m256i level = _mm256_sub_epi8(_mm256_or_si256(nibble, _mm256_slli_epi16(top, 4)), bias);
          // Lanes 0-3 hold elements l < 16 (scale 8 h + 2 k), lanes 4-7 the rest.
          const __m256i scales = _mm256_shuffle_epi8(
              half_scales, _mm256_set_m128i(_mm_set1_epi16(static_cast<int16_t>(0x0100 + 0x0202 * (2 * k + 1))),
                                            _mm_set1_epi16(static_cast<int16_t>(0x0100 + 0x0202 * 2 * k))));
#pragma GCC unroll 4
          for (int j = 0; j < kT; ++j) {
            const int8_t* q = a.q.data() + (tile.t0 + j) * a.K + b * kElems + 128 * h + 32 * k;
            isum[j] = _mm256_add_epi32(isum[j], _mm256_madd_epi16(MulSigned(level, Load32(q)), scales));
          }
        }
      }
#pragma GCC unroll 4
      for (int j = 0; j < kT; ++j) AddScaled(acc[i][j], isum[j], d * a.d[(tile.t0 + j) * groups + b]);
    }
  }
};

#else
// Other targets (SSE4 and below, scalar): the same sums in plain integer
// code, one f32 lane per pair.
struct IntAcc {
  float v, m;
};
HWY_INLINE IntAcc ZeroAcc() { return IntAcc{0.0f, 0.0f}; }
HWY_INLINE float Finish(const IntAcc& acc) { return acc.v - acc.m; }

// The levels of one weight block (kElems values) and, per 32 (Q4_K) or 16
// (Q6_K) elements, the integer scale they are summed with.
struct IntQ8_0 {
  static constexpr bool kMins = false;
  static constexpr int64_t kStep = 1;  // blocks per Block call
  static constexpr int64_t kElems = q8_0::kElems, kBytes = q8_0::kBytes, kSub = 32;
  static float Levels(const uint8_t* blk, int32_t* level, int32_t* scale, int32_t*, float* dmin) {
    for (int64_t i = 0; i < kElems; ++i) level[i] = static_cast<int8_t>(blk[q8_0::kQs + i]);
    scale[0] = 1;
    *dmin = 0.0f;
    return load_f16(blk + q8_0::kD);
  }
};
struct IntQ4_0 {
  static constexpr bool kMins = false;
  static constexpr int64_t kStep = 1;  // blocks per Block call
  static constexpr int64_t kElems = q4_0::kElems, kBytes = q4_0::kBytes, kSub = 32;
  static float Levels(const uint8_t* blk, int32_t* level, int32_t* scale, int32_t*, float* dmin) {
    for (int64_t i = 0; i < 16; ++i) {
      level[i] = (blk[q4_0::kQs + i] & 0xf) - 8;
      level[i + 16] = (blk[q4_0::kQs + i] >> 4) - 8;
    }
    scale[0] = 1;
    *dmin = 0.0f;
    return load_f16(blk + q4_0::kD);
  }
};
struct IntQ4_K {
  static constexpr bool kMins = true;
  static constexpr int64_t kStep = 1;
  static constexpr int64_t kElems = q4_k::kElems, kBytes = q4_k::kBytes, kSub = 32;
  static float Levels(const uint8_t* blk, int32_t* level, int32_t* scale, int32_t* mins, float* dmin) {
    uint8_t sm[16];
    q4_k_scales_mins(blk + q4_k::kScales, sm);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) {
        level[64 * c + l] = blk[q4_k::kQs + 32 * c + l] & 0xf;
        level[64 * c + 32 + l] = blk[q4_k::kQs + 32 * c + l] >> 4;
      }
    for (int k = 0; k < 8; ++k) scale[k] = sm[k], mins[k] = sm[8 + k];
    *dmin = load_f16(blk + q4_k::kDmin);
    return load_f16(blk + q4_k::kD);
  }
};
struct IntQ6_K {
  static constexpr bool kMins = false;
  static constexpr int64_t kStep = 1;  // blocks per Block call
  static constexpr int64_t kElems = q6_k::kElems, kBytes = q6_k::kBytes, kSub = 16;
  static float Levels(const uint8_t* blk, int32_t* level, int32_t* scale, int32_t*, float* dmin) {
    for (int h = 0; h < 2; ++h)
      for (int l = 0; l < 32; ++l) {
        const uint8_t* ql = blk + q6_k::kQl + 64 * h;
        const int qh = blk[q6_k::kQh + 32 * h + l];
        int32_t* out = level + 128 * h;
        out[l] = ((ql[l] & 0xf) | ((qh & 3) << 4)) - 32;
        out[l + 32] = ((ql[l + 32] & 0xf) | (((qh >> 2) & 3) << 4)) - 32;
        out[l + 64] = ((ql[l] >> 4) | (((qh >> 4) & 3) << 4)) - 32;
        out[l + 96] = ((ql[l + 32] >> 4) | (((qh >> 6) & 3) << 4)) - 32;
      }
    for (int k = 0; k < 16; ++k) scale[k] = static_cast<int8_t>(blk[q6_k::kScales + k]);
    *dmin = 0.0f;
    return load_f16(blk + q6_k::kD);
  }
};

template <class Format>
struct IntGeneric : Format {
  template <int kR, int kT>
  static HWY_INLINE void Block(const IntTile& tile, int64_t b, int64_t /*nb*/, IntAcc (&acc)[kR][kT]) {
    using F = Format;
    const ActivationBlocks& a = *tile.a;
    const int64_t groups = a.K / F::kElems, sub = a.K / 32;
    int32_t level[F::kElems], scale[F::kElems / F::kSub], mins[8] = {};
    for (int i = 0; i < kR; ++i) {
      float dmin;
      const float dw = F::Levels(tile.w + i * tile.row_bytes + b * F::kBytes, level, scale, mins, &dmin);
      for (int j = 0; j < kT; ++j) {
        const int64_t t = tile.t0 + j;
        const int8_t* q = a.q.data() + t * a.K + b * F::kElems;
        int32_t isum = 0;
        for (int64_t s = 0; s < F::kElems / F::kSub; ++s) {
          int32_t part = 0;
          for (int64_t l = s * F::kSub; l < (s + 1) * F::kSub; ++l) part += level[l] * q[l];
          isum += scale[s] * part;
        }
        const float dx = a.d[t * groups + b];
        acc[i][j].v = static_cast<float>(isum) * (dw * dx) + acc[i][j].v;
        if constexpr (F::kMins) {
          int32_t m = 0;
          for (int k = 0; k < 8; ++k) m += mins[k] * a.sums[t * sub + 8 * b + k];
          acc[i][j].m = (dmin * dx) * static_cast<float>(m) + acc[i][j].m;
        }
      }
    }
  }
};
#endif

// Calls f(Format()) with the integer kernel of `dtype`.
template <class F>
HWY_INLINE void WithIntFormat(DType dtype, F&& f) {
#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3
#define FLORA_INT_FORMAT(name) name
#else
#define FLORA_INT_FORMAT(name) IntGeneric<name>
#endif
  switch (dtype) {
    case DType::Q8_0:
      return f(FLORA_INT_FORMAT(IntQ8_0)());
    case DType::Q4_0:
      return f(FLORA_INT_FORMAT(IntQ4_0)());
    case DType::Q4_K:
      return f(FLORA_INT_FORMAT(IntQ4_K)());
    case DType::Q6_K:
      return f(FLORA_INT_FORMAT(IntQ6_K)());
    default:
      fail("matrix product: format {} has no integer kernel in ops/quant_kernels.cpp", dtype_name(dtype));
  }
#undef FLORA_INT_FORMAT
}

// y[t, r] for the tile's kR rows (r0...) and kT tokens: the blocks in order.
// prefetch: the same bytes of the next rows, a block ahead of their use.
template <class Format, int kR, int kT>
HWY_INLINE void IntRowTile(const IntTile& tile, int64_t blocks, float* y, int64_t ldy, bool accumulate,
                           const uint8_t* prefetch) {
  IntAcc acc[kR][kT];
#pragma GCC unroll 4
  for (int i = 0; i < kR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < kT; ++j) acc[i][j] = ZeroAcc();
  for (int64_t b = 0; b < blocks; b += Format::kStep) {
    const int64_t nb = std::min(Format::kStep, blocks - b);
    if (prefetch)
#pragma GCC unroll 4
      for (int i = 0; i < kR; ++i)
        for (int64_t line = 0; line < nb * Format::kBytes; line += 64)
          __builtin_prefetch(prefetch + i * tile.row_bytes + b * Format::kBytes + line, 0, 0);
    Format::template Block<kR, kT>(tile, b, nb, acc);
  }
#pragma GCC unroll 4
  for (int i = 0; i < kR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < kT; ++j) {
      float& out = y[(tile.t0 + j) * ldy + i];
      const float s = Finish(acc[i][j]);
      out = accumulate ? out + s : s;
    }
}

// Tokens per pass over the rows: their activations (64 K bytes) stay in L2
// while every row of the range meets them.
constexpr int64_t kTokenPass = 64;
// Rows per register block of a batch: 2 where 32 vector registers hold the
// 2 x 4 accumulators and their operands (AVX-512), else 1.
constexpr int64_t kBatchRows = HWY_TARGET == HWY_AVX3 ? 2 : 1;

void IntRows(float* y, int64_t ldy, const ActivationBlocks& a, const MatrixRef& w, int64_t row0, int64_t row1,
             bool accumulate) {
  const int64_t row_bytes = w.row_bytes();
  const auto* data = static_cast<const uint8_t*>(w.data);
  WithIntFormat(w.dtype, [&](auto format) {
    using Format = decltype(format);
    const int64_t blocks = w.cols / Format::kElems;
    if (a.T == 1) {  // decode: 4 rows at a time, the next 4 prefetched
      int64_t r = row0;
      for (; r + 4 <= row1; r += 4) {
        const uint8_t* next = r + 8 <= row1 ? data + (r + 4) * row_bytes : nullptr;
        IntRowTile<Format, 4, 1>(IntTile{data + r * row_bytes, row_bytes, &a, 0}, blocks, y + r, ldy, accumulate, next);
      }
      for (; r < row1; ++r)
        IntRowTile<Format, 1, 1>(IntTile{data + r * row_bytes, row_bytes, &a, 0}, blocks, y + r, ldy, accumulate,
                                 nullptr);
      return;
    }
    // Batches: a row's blocks unpacked once per 4 tokens, a token's
    // activations loaded once per kBatchRows rows.
    for (int64_t p0 = 0; p0 < a.T; p0 += kTokenPass) {
      const int64_t p1 = std::min(a.T, p0 + kTokenPass);
      int64_t r = row0;
      for (; r + kBatchRows <= row1; r += kBatchRows) {
        const uint8_t* row = data + r * row_bytes;
        int64_t t = p0;
        for (; t + 4 <= p1; t += 4)
          IntRowTile<Format, kBatchRows, 4>(IntTile{row, row_bytes, &a, t}, blocks, y + r, ldy, accumulate, nullptr);
        for (; t < p1; ++t)
          IntRowTile<Format, kBatchRows, 1>(IntTile{row, row_bytes, &a, t}, blocks, y + r, ldy, accumulate, nullptr);
      }
      for (; r < row1; ++r) {
        const uint8_t* row = data + r * row_bytes;
        int64_t t = p0;
        for (; t + 4 <= p1; t += 4)
          IntRowTile<Format, 1, 4>(IntTile{row, row_bytes, &a, t}, blocks, y + r, ldy, accumulate, nullptr);
        for (; t < p1; ++t)
          IntRowTile<Format, 1, 1>(IntTile{row, row_bytes, &a, t}, blocks, y + r, ldy, accumulate, nullptr);
      }
    }
  });
}

// ---- rounding activations (the same bits on every target)

void RoundActivations(const float* x, int64_t ldx, int64_t T, int64_t K, int64_t group, int8_t* q, float* d,
                      int16_t* sums) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const DI di;
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x + t * ldx;
    for (int64_t g = 0; g < K / group; ++g) {
      const float* xg = xt + g * group;
      VF amax = hn::Zero(df);
      for (int64_t i = 0; i < group; i += N) amax = hn::Max(amax, hn::Abs(hn::LoadU(df, xg + i)));
      // A NaN can be dropped by Max; the sum of the values is NaN whenever one
      // is NaN or infinite (or infinities cancel).
      VF total = hn::Zero(df);
      for (int64_t i = 0; i < group; i += N) total = hn::Add(total, hn::Mul(hn::LoadU(df, xg + i), hn::Zero(df)));
      const float m = hn::GetLane(hn::MaxOfLanes(df, amax));
      const bool finite = std::isfinite(hn::GetLane(hn::SumOfLanes(df, total))) && std::isfinite(m);
      d[t * (K / group) + g] = finite ? m / 127.0f : std::numeric_limits<float>::quiet_NaN();
      const float id = finite && m > 0.0f ? 127.0f / m : 0.0f;
      int8_t* qg = q + t * K + g * group;
      // Round to nearest even by the IEEE addition of 1.5 * 2^23 (exact for
      // |v| <= 2^22; here |v| <= 127.5), the integer left in the low bits:
      // the same on every target, unlike NearestInt's scalar emulation.
      const VF magic = hn::Set(df, 12582912.0f);
      for (int64_t i = 0; i < group; i += N) {
        const VF scaled = hn::Add(hn::Mul(hn::LoadU(df, xg + i), hn::Set(df, id)), magic);
        const auto v = hn::Sub(hn::BitCast(di, scaled), hn::BitCast(di, magic));
        hn::StoreU(hn::DemoteTo(hn::Rebind<int8_t, DF>(), v), hn::Rebind<int8_t, DF>(), qg + i);
      }
    }
    for (int64_t s = 0; s < K / 32; ++s) {
      auto total = hn::Zero(di);
      for (int64_t i = 0; i < 32; i += N) total = hn::Add(total, hn::PromoteTo(di, hn::LoadU(DI8(), q + t * K + 32 * s + i)));
      sums[t * (K / 32) + s] = static_cast<int16_t>(hn::GetLane(hn::SumOfLanes(di, total)));
    }
  }
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

HWY_EXPORT(IntRows);
HWY_EXPORT(RoundActivations);
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
// over it once per token.
constexpr int64_t kTileFloats = 64 * 1024;

}  // namespace

int64_t activation_group(DType weights) {
  switch (weights) {
    case DType::Q8_0:
    case DType::Q4_0:
      return 32;
    case DType::Q4_K:
    case DType::Q6_K:
      return 256;
    default:
      fail("integer product: {} is not a block format (one of Q8_0, Q4_0, Q4_K, Q6_K)", dtype_name(weights));
  }
}

void round_activations(const float* x, int64_t ldx, int64_t T, int64_t K, int64_t group, ActivationBlocks& out) {
  if ((group != 32 && group != 256) || K % group != 0)
    fail("round activations: {} columns are not whole groups of {} (groups are 32 or 256)", K, group);
  out.T = T, out.K = K, out.group = group;
  out.q.resize(static_cast<size_t>(T * K));
  out.d.resize(static_cast<size_t>(T * (K / group)));
  out.sums.resize(static_cast<size_t>(T * (K / 32)));
  HWY_DYNAMIC_DISPATCH(RoundActivations)(x, ldx, T, K, group, out.q.data(), out.d.data(), out.sums.data());
}

void matmul_rows(float* y, int64_t ldy, const ActivationBlocks& x, const MatrixRef& w, int64_t row0, int64_t row1,
                 bool accumulate) {
  if (x.K != w.cols || x.group != activation_group(w.dtype))
    fail("matrix product: activations of {} columns in groups of {} for a {} matrix of {} columns (groups of {})", x.K,
         x.group, dtype_name(w.dtype), w.cols, activation_group(w.dtype));
  HWY_DYNAMIC_DISPATCH(IntRows)(y, ldy, x, w, row0, row1, accumulate);
}

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
  thread_local ActivationBlocks rounded;
  round_activations(x, ldx, T, w.cols, activation_group(w.dtype), rounded);
  matmul_rows(y, ldy, rounded, w, row0, row1, accumulate);
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
