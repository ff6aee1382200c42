// ggml's block formats: the one place for their layouts, and their codecs.
//
// A block is `kElems` consecutive elements of a row in `kBytes` bytes; scales
// are f16 (little-endian, unaligned: blocks of 34 or 18 bytes follow each other,
// so they are read with memcpy). Byte offsets inside a block:
//
//   Q8_0  32 elements in 34 bytes: d (f16) at 0; qs[32] int8 at 2.
//         x[j] = qs[j] * d
//   Q4_0  32 elements in 18 bytes: d (f16) at 0; qs[16] at 2, element j in the
//         low nibble of qs[j] and element 16 + j in its high nibble.
//         x[j] = (nibble - 8) * d
//   Q4_K  256 elements in 144 bytes, 8 sub-blocks of 32: d (f16) at 0, dmin (f16)
//         at 2; scales[12] at 4 (a 6-bit scale sc and a 6-bit min m per sub-block,
//         packed as q4_k_scales_mins unpacks them); qs[128] at 16, elements
//         64 c + l (sub-block 2c) in the low nibble of qs[32 c + l] and 64 c + 32 + l
//         (sub-block 2c + 1) in its high nibble, c < 4, l < 32.
//         x = (d * sc) * nibble - (dmin * m)
//   Q6_K  256 elements in 210 bytes, 16 sub-blocks of 16: ql[128] at 0 (low 4
//         bits), qh[64] at 128 (high 2 bits), scales[16] int8 at 192, d (f16) at
//         208. Half h < 2 (elements 128 h ...) uses ql[64 h ...], qh[32 h ...] and
//         scales[8 h ...]; for l < 32 the four 6-bit values of qh[l]'s bit pairs are
//           element l      : ql[l] low nibble,      qh bits 0-1, scale s[l / 16]
//           element l + 32 : ql[l + 32] low nibble, qh bits 2-3, scale s[2 + l / 16]
//           element l + 64 : ql[l] high nibble,     qh bits 4-5, scale s[4 + l / 16]
//           element l + 96 : ql[l + 32] high nibble, qh bits 6-7, scale s[6 + l / 16]
//         x = (d * scale) * (value - 32)
//
// The codecs are ggml's reference algorithms (quantize_row_*_ref, no importance
// matrix; dequantize_row_*), written again from their description here: the
// same IEEE operations in the same order, so that this file, compiled without
// floating-point contraction (CMakeLists.txt), produces ggml's bytes and floats
// bit for bit (tests/test_quant.cpp checks against ggml itself).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "util/dtype.h"

namespace flora {

namespace q8_0 {
inline constexpr int64_t kElems = 32, kBytes = 34, kD = 0, kQs = 2;
}
namespace q4_0 {
inline constexpr int64_t kElems = 32, kBytes = 18, kD = 0, kQs = 2;
}
namespace q4_k {
inline constexpr int64_t kElems = 256, kBytes = 144, kD = 0, kDmin = 2, kScales = 4, kQs = 16;
}
namespace q6_k {
inline constexpr int64_t kElems = 256, kBytes = 210, kQl = 0, kQh = 128, kScales = 192, kD = 208;
}

// The f16 at p (unaligned), widened.
inline float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// The 6-bit scales and mins of a Q4_K block's 8 sub-blocks, from its 12 bytes
// at `packed`: out[j] = scale of sub-block j, out[8 + j] = its min. Bytes 0-3
// hold the scales of sub-blocks 0-3 and bytes 4-7 their mins (low 6 bits);
// sub-blocks 4-7 keep their low 4 bits in the nibbles of bytes 8-11 (scale
// low, min high) and their top 2 bits in the top bits of bytes 0-3 (scales)
// and 4-7 (mins). Four bytes at a time: as little-endian words, out[4 i ..]
// being words[i].
inline void q4_k_scales_mins(const uint8_t* packed, uint32_t* words) {
  uint32_t w[3];
  std::memcpy(w, packed, 12);
  constexpr uint32_t kLow6 = 0x3f3f3f3f, kLow4 = 0x0f0f0f0f, kTop2 = 0x03030303;
  words[0] = w[0] & kLow6;
  words[1] = (w[2] & kLow4) | (((w[0] >> 6) & kTop2) << 4);
  words[2] = w[1] & kLow6;
  words[3] = ((w[2] >> 4) & kLow4) | (((w[1] >> 6) & kTop2) << 4);
}
// The same as 16 bytes at out.
inline void q4_k_scales_mins(const uint8_t* packed, uint8_t* out) {
  uint32_t words[4];
  q4_k_scales_mins(packed, words);
  std::memcpy(out, words, 16);
}

// Bytes of n elements of `type`, any row of kWeightFormats (ops/formats.h); n
// must be whole blocks (an error otherwise, as for a type with no format).
size_t quantized_bytes(DType type, int64_t n);
// x (n) -> out (quantized_bytes(type, n) bytes), n whole blocks of `type`. For
// the block formats ggml's reference quantizer (Q8_0, Q4_0: round to nearest
// of the absolute maximum; Q4_K, Q6_K: the searched scales of ggml's
// quantize_row_q4_K_ref / quantize_row_q6_K_ref); F32, F16 and BF16 round to
// nearest even.
void quantize_row(DType type, const float* x, int64_t n, void* out);
// in (quantized_bytes(type, n) bytes) -> out (n), ggml's dequantize_row_* for
// the block formats; exact widening for F16 and BF16.
void dequantize_row(DType type, const void* in, int64_t n, float* out);

}  // namespace flora
