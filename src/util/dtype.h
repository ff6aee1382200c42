// Element types of stored tensors, named as safetensors names them, and
// ggml's block formats (Q8_0, Q4_0, Q4_K, Q6_K: layouts and codecs in
// ops/quant.h), named as ggml names them. safetensors has no block formats:
// parse_dtype, the safetensors reader's, knows only its own names.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace flora {

enum class DType : uint8_t { F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL, Q8_0, Q4_0, Q4_K, Q6_K };

// Whether `t` is a block format (several elements share a scale: no size per element).
bool is_quantized(DType t);
// Bytes per element; 0 for a block format, whose sizes are per block
// (kWeightFormats in ops/formats.h, quantized_bytes in ops/quant.h).
size_t dtype_size(DType t);
std::string_view dtype_name(DType t);                     // "F32", "BF16", "Q4_K", ...
std::optional<DType> parse_dtype(std::string_view name);  // inverse of dtype_name for safetensors' dtypes only

// Scalar conversions (round-to-nearest-even on the way down; NaN stays NaN).
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
// Exact (every f16 value is an f32 value) and cheap enough for a scale per
// block of 32 weights: the exponent is rebiased by a multiply by a power of two,
// a subnormal's mantissa goes through the adder; infinities and NaN (its payload
// kept) stay what they are.
inline float f16_to_f32(uint16_t h) {
  const uint32_t w = static_cast<uint32_t>(h) << 16, sign = w & 0x80000000u, two_w = w + w;
  uint32_t u = (two_w >> 4) + (0xe0u << 23);  // exponent + (127 - 15) + 112, mantissa in place
  float normal;
  std::memcpy(&normal, &u, 4);
  normal *= 0x1.0p-112f;
  u = (two_w >> 17) | (126u << 23);  // 0.5 + mantissa * 2^-24
  float subnormal;
  std::memcpy(&subnormal, &u, 4);
  subnormal -= 0.5f;
  std::memcpy(&u, two_w < (1u << 27) ? &subnormal : &normal, 4);  // exponent 0: subnormal or zero
  u |= sign;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t f32_to_f16(float f);

}  // namespace flora
