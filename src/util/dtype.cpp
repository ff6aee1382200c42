#include "util/dtype.h"

#include <cmath>

namespace flora {

bool is_quantized(DType t) { return t == DType::Q8_0 || t == DType::Q4_0 || t == DType::Q4_K || t == DType::Q6_K; }

size_t dtype_size(DType t) {
  switch (t) {
    case DType::Q8_0: case DType::Q4_0: case DType::Q4_K: case DType::Q6_K: return 0;
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    case DType::I8: case DType::U8: case DType::BOOL: return 1;
  }
  return 0;
}

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F64: return "F64";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
    case DType::Q8_0: return "Q8_0";
    case DType::Q4_0: return "Q4_0";
    case DType::Q4_K: return "Q4_K";
    case DType::Q6_K: return "Q6_K";
  }
  return "?";
}

std::optional<DType> parse_dtype(std::string_view name) {
  // The block formats are left out on purpose: a safetensors header naming
  // "Q8_0" is refused as an unknown dtype, never read as ggml's blocks.
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::F64, DType::I64, DType::I32,
                  DType::I16, DType::I8, DType::U8, DType::BOOL})
    if (dtype_name(t) == name) return t;
  return std::nullopt;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;          // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;         // overflows to inf (after rounding)
  if (abs < 0x38800000u) {                               // subnormal or zero in f16
    float a;
    std::memcpy(&a, &abs, 4);
    return sign | static_cast<uint16_t>(std::nearbyint(a * 16777216.0f));  // a / 2^-24, ties-to-even
  }
  uint32_t r = abs + 0xfffu + ((abs >> 13) & 1u);        // round mantissa to 10 bits, ties-to-even
  return sign | static_cast<uint16_t>((r - 0x38000000u) >> 13);
}

}  // namespace flora
