// The block codecs of quant.h. Bit-identity with ggml rests on doing ggml's
// float operations in ggml's order: every expression below keeps the
// association of ggml's (a * b * c is (a * b) * c, an int operand is converted
// to float where ggml's C converts it), and this file is compiled with
// -ffp-contract=off (CMakeLists.txt), so no a * b + c becomes one fused
// rounding on a CPU with FMA. libm is used only for the correctly rounded
// sqrtf and fabsf and the exact roundf.
#include "ops/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/formats.h"
#include "util/error.h"

namespace flora {

namespace {

void store_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

// ggml's nearest_int: adding 1.5 * 2^23 leaves round-to-nearest-even of v in
// the low mantissa bits (exact for |v| <= 2^22; beyond that the same bits as
// ggml's, meaningless but deterministic).
int nearest_int(float v) {
  const float biased = v + 12582912.0f;
  int32_t bits;
  std::memcpy(&bits, &biased, 4);
  return (bits & 0x007fffff) - 0x00400000;
}

int clamp(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

// ---- Q8_0 and Q4_0: one scale from the block's extreme value

void quantize_q8_0(const float* x, int64_t blocks, uint8_t* out) {
  for (int64_t b = 0; b < blocks; ++b, x += q8_0::kElems, out += q8_0::kBytes) {
    float amax = 0.0f;
    for (int j = 0; j < q8_0::kElems; ++j) {
      const float a = std::fabs(x[j]);
      amax = amax > a ? amax : a;
    }
    const float d = amax / 127;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(out + q8_0::kD, d);
    // roundf: halves away from zero; |x id| <= 127 (plus rounding) fits int8.
    for (int j = 0; j < q8_0::kElems; ++j)
      out[q8_0::kQs + j] = static_cast<uint8_t>(static_cast<int8_t>(static_cast<int>(std::round(x[j] * id))));
  }
}

void dequantize_q8_0(const uint8_t* in, int64_t blocks, float* y) {
  for (int64_t b = 0; b < blocks; ++b, in += q8_0::kBytes, y += q8_0::kElems) {
    const float d = load_f16(in + q8_0::kD);
    for (int j = 0; j < q8_0::kElems; ++j) y[j] = static_cast<float>(static_cast<int8_t>(in[q8_0::kQs + j])) * d;
  }
}

void quantize_q4_0(const float* x, int64_t blocks, uint8_t* out) {
  for (int64_t b = 0; b < blocks; ++b, x += q4_0::kElems, out += q4_0::kBytes) {
    // The value of largest magnitude (the first of equals) maps to -8, the
    // level with no positive twin, so it keeps its sign exactly.
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < q4_0::kElems; ++j)
      if (amax < std::fabs(x[j])) amax = std::fabs(x[j]), max = x[j];
    const float d = max / -8;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(out + q4_0::kD, d);
    // x id + 8.5 lies in [0.5, 16.5]: truncation is rounding half up to 0..16, capped at 15.
    auto level = [&](float v) {
      return static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(static_cast<int>(v * id + 8.5f)))));
    };
    for (int j = 0; j < q4_0::kElems / 2; ++j)
      out[q4_0::kQs + j] = static_cast<uint8_t>(level(x[j]) | (level(x[j + q4_0::kElems / 2]) << 4));
  }
}

void dequantize_q4_0(const uint8_t* in, int64_t blocks, float* y) {
  for (int64_t b = 0; b < blocks; ++b, in += q4_0::kBytes, y += q4_0::kElems) {
    const float d = load_f16(in + q4_0::kD);
    for (int j = 0; j < q4_0::kElems / 2; ++j) {
      const uint8_t q = in[q4_0::kQs + j];
      y[j] = static_cast<float>((q & 0xf) - 8) * d;
      y[j + q4_0::kElems / 2] = static_cast<float>((q >> 4) - 8) * d;
    }
  }
}

// ---- Q4_K: per sub-block of 32 a scale and a min (x ~ scale L - min, L 0..15),
// both then quantized to 6 bits against the super-block's d and dmin

// ggml's make_qkx2_quants (squared error): the levels L (n, 0..nmax) and
// scale, min of the weighted least-squares fit x ~ scale L + min (min <= 0),
// trying the grid of nstep + 1 inverse scales (rmin + rdelta is + nmax) /
// (max - min) after the plain one. Returns the scale; -min in *neg_min.
float fit_scale_min(int n, int nmax, const float* x, const float* w, uint8_t* L, float* neg_min, uint8_t* Laux,
                    float rmin, float rdelta, int nstep) {
  float min = x[0], max = x[0];
  float sum_w = w[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *neg_min = -min;
    return 0.0f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    L[i] = static_cast<uint8_t>(clamp(nearest_int(iscale * (x[i] - min)), 0, nmax));
    const float diff = scale * L[i] + min - x[i];
    best_error += w[i] * (diff * diff);
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clamp(nearest_int(iscale * (x[i] - min)), 0, nmax);
      Laux[i] = static_cast<uint8_t>(l);
      sum_l += w[i] * l;
      sum_l2 += w[i] * l * l;
      sum_xl += w[i] * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float error = 0;
      for (int i = 0; i < n; ++i) {
        const float diff = this_scale * Laux[i] + this_min - x[i];
        error += w[i] * (diff * diff);
      }
      if (error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_error = error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *neg_min = -min;
  return scale;
}

void quantize_q4_k(const float* x, int64_t blocks, uint8_t* out) {
  constexpr int kSub = 32, kSubs = q4_k::kElems / kSub;
  for (int64_t b = 0; b < blocks; ++b, x += q4_k::kElems, out += q4_k::kBytes) {
    uint8_t L[q4_k::kElems], Laux[kSub];
    float weights[kSub], mins[kSubs], scales[kSubs];
    float max_scale = 0, max_min = 0;  // scales and mins are >= 0
    for (int j = 0; j < kSubs; ++j) {
      const float* xs = x + kSub * j;
      float sum_x2 = 0;
      for (int l = 0; l < kSub; ++l) sum_x2 += xs[l] * xs[l];
      const float av_x = std::sqrt(sum_x2 / kSub);
      for (int l = 0; l < kSub; ++l) weights[l] = av_x + std::fabs(xs[l]);
      scales[j] = fit_scale_min(kSub, 15, xs, weights, L + kSub * j, &mins[j], Laux, -1.0f, 0.1f, 20);
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    uint8_t* packed = out + q4_k::kScales;
    for (int j = 0; j < kSubs; ++j) {
      // ggml stores nearest_int's int in a uint8_t before capping it at 63.
      const uint8_t ls = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_scale * scales[j])));
      const uint8_t lm = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_min * mins[j])));
      if (j < 4) {
        packed[j] = ls;
        packed[j + 4] = lm;
      } else {
        packed[j + 4] = static_cast<uint8_t>((ls & 0xf) | ((lm & 0xf) << 4));
        packed[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
        packed[j] |= static_cast<uint8_t>((lm >> 4) << 6);
      }
    }
    store_f16(out + q4_k::kD, max_scale / 63.0f);
    store_f16(out + q4_k::kDmin, max_min / 63.0f);
    // The levels again, against the scales as stored.
    const float d_all = load_f16(out + q4_k::kD), dmin_all = load_f16(out + q4_k::kDmin);
    uint8_t sm[16];
    q4_k_scales_mins(packed, sm);
    for (int j = 0; j < kSubs; ++j) {
      const float d = d_all * sm[j];
      if (d == 0) continue;
      const float dm = dmin_all * sm[8 + j];
      for (int l = 0; l < kSub; ++l)
        L[kSub * j + l] = static_cast<uint8_t>(clamp(nearest_int((x[kSub * j + l] + dm) / d), 0, 15));
    }
    uint8_t* qs = out + q4_k::kQs;
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) qs[32 * c + l] = static_cast<uint8_t>(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
  }
}

void dequantize_q4_k(const uint8_t* in, int64_t blocks, float* y) {
  for (int64_t b = 0; b < blocks; ++b, in += q4_k::kBytes) {
    const float d = load_f16(in + q4_k::kD), dmin = load_f16(in + q4_k::kDmin);
    uint8_t sm[16];
    q4_k_scales_mins(in + q4_k::kScales, sm);
    const uint8_t* qs = in + q4_k::kQs;
    for (int c = 0; c < 4; ++c, qs += 32) {
      const float d1 = d * sm[2 * c], m1 = dmin * sm[8 + 2 * c];
      const float d2 = d * sm[2 * c + 1], m2 = dmin * sm[8 + 2 * c + 1];
      for (int l = 0; l < 32; ++l) *y++ = d1 * (qs[l] & 0xf) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * (qs[l] >> 4) - m2;
    }
  }
}

// ---- Q6_K: per sub-block of 16 a signed scale (x ~ scale L, L -32..31),
// quantized to int8 against the super-block's d

// ggml's make_qx_quants with rmse_type 1 and no importance: levels L (n,
// stored + nmax) and the scale of the least-squares fit weighted by x^2,
// trying inverse scales -(nmax + 0.1 is) / max for is = -9..9 after the plain
// one, where max is the value of largest magnitude.
float fit_scale(int n, int nmax, const float* x, int8_t* L) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) amax = ax, max = x[i];
  }
  if (amax < 1e-15f) {  // ggml's GROUP_MAX_EPS: all zero
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.0f;
  }
  float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
      const float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(nmax + clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1));
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

void quantize_q6_k(const float* x, int64_t blocks, uint8_t* out) {
  constexpr int kSub = 16, kSubs = q6_k::kElems / kSub;
  for (int64_t b = 0; b < blocks; ++b, x += q6_k::kElems, out += q6_k::kBytes) {
    int8_t L[q6_k::kElems];
    float scales[kSubs];
    float max_scale = 0, max_abs_scale = 0;
    for (int j = 0; j < kSubs; ++j) {
      scales[j] = fit_scale(kSub, 32, x + kSub * j, L + kSub * j);
      if (std::fabs(scales[j]) > max_abs_scale) max_abs_scale = std::fabs(scales[j]), max_scale = scales[j];
    }
    if (max_abs_scale < 1e-15f) {  // all zero: a zero block
      std::memset(out, 0, q6_k::kBytes);
      continue;
    }
    // The scale of largest magnitude maps to -128, the int8 level with no positive twin.
    const float iscale = -128.0f / max_scale;
    store_f16(out + q6_k::kD, 1 / iscale);
    int8_t* sub_scales = reinterpret_cast<int8_t*>(out + q6_k::kScales);
    for (int j = 0; j < kSubs; ++j) sub_scales[j] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[j])));
    // The levels again, against the scales as stored.
    const float d_all = load_f16(out + q6_k::kD);
    for (int j = 0; j < kSubs; ++j) {
      const float d = d_all * sub_scales[j];
      if (d == 0) continue;
      for (int l = 0; l < kSub; ++l)
        L[kSub * j + l] = static_cast<int8_t>(clamp(nearest_int(x[kSub * j + l] / d), -32, 31) + 32);
    }
    uint8_t* ql = out + q6_k::kQl;
    uint8_t* qh = out + q6_k::kQh;
    for (int h = 0; h < 2; ++h, ql += 64, qh += 32) {
      const int8_t* Lh = L + 128 * h;
      for (int l = 0; l < 32; ++l) {
        ql[l] = static_cast<uint8_t>((Lh[l] & 0xf) | ((Lh[l + 64] & 0xf) << 4));
        ql[l + 32] = static_cast<uint8_t>((Lh[l + 32] & 0xf) | ((Lh[l + 96] & 0xf) << 4));
        qh[l] = static_cast<uint8_t>((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) | ((Lh[l + 64] >> 4) << 4) |
                                     ((Lh[l + 96] >> 4) << 6));
      }
    }
  }
}

void dequantize_q6_k(const uint8_t* in, int64_t blocks, float* y) {
  for (int64_t b = 0; b < blocks; ++b, in += q6_k::kBytes) {
    const float d = load_f16(in + q6_k::kD);
    const uint8_t* ql = in + q6_k::kQl;
    const uint8_t* qh = in + q6_k::kQh;
    const int8_t* sc = reinterpret_cast<const int8_t*>(in + q6_k::kScales);
    for (int h = 0; h < 2; ++h, ql += 64, qh += 32, sc += 8, y += 128)
      for (int l = 0; l < 32; ++l) {
        const int s = l / 16;
        const int q1 = ((ql[l] & 0xf) | ((qh[l] & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * sc[s] * q1;
        y[l + 32] = d * sc[s + 2] * q2;
        y[l + 64] = d * sc[s + 4] * q3;
        y[l + 96] = d * sc[s + 6] * q4;
      }
  }
}

// The format of `type` with n checked to be whole blocks; `what` names the caller.
const WeightFormat& checked_format(DType type, int64_t n, const char* what) {
  const WeightFormat& f = weight_format(type, what);
  if (n < 0 || n % f.block_elems != 0)
    fail("{}: {} elements are not whole {}-element blocks of {}", what, n, f.block_elems, f.name);
  return f;
}

}  // namespace

size_t quantized_bytes(DType type, int64_t n) {
  const WeightFormat& f = checked_format(type, n, "quantized size");
  return static_cast<size_t>(n / f.block_elems * f.block_bytes);
}

void quantize_row(DType type, const float* x, int64_t n, void* out) {
  const int64_t blocks = n / checked_format(type, n, "quantize").block_elems;
  auto* o = static_cast<uint8_t*>(out);
  switch (type) {
    case DType::Q8_0:
      return quantize_q8_0(x, blocks, o);
    case DType::Q4_0:
      return quantize_q4_0(x, blocks, o);
    case DType::Q4_K:
      return quantize_q4_k(x, blocks, o);
    case DType::Q6_K:
      return quantize_q6_k(x, blocks, o);
    case DType::F32:
      std::memcpy(o, x, static_cast<size_t>(n) * 4);
      return;
    case DType::F16:
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = type == DType::F16 ? f32_to_f16(x[i]) : f32_to_bf16(x[i]);
        std::memcpy(o + 2 * i, &h, 2);
      }
      return;
    default:
      fail("quantize: format {} has no quantizer in ops/quant.cpp", dtype_name(type));
  }
}

void dequantize_row(DType type, const void* in, int64_t n, float* out) {
  const int64_t blocks = n / checked_format(type, n, "dequantize").block_elems;
  const auto* p = static_cast<const uint8_t*>(in);
  switch (type) {
    case DType::Q8_0:
      return dequantize_q8_0(p, blocks, out);
    case DType::Q4_0:
      return dequantize_q4_0(p, blocks, out);
    case DType::Q4_K:
      return dequantize_q4_k(p, blocks, out);
    case DType::Q6_K:
      return dequantize_q6_k(p, blocks, out);
    case DType::F32:
      std::memcpy(out, p, static_cast<size_t>(n) * 4);
      return;
    case DType::F16:
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = type == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
      }
      return;
    default:
      fail("dequantize: format {} has no dequantizer in ops/quant.cpp", dtype_name(type));
  }
}

}  // namespace flora
