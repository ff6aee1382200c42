// The elementwise functions of the model, each written once for inference and
// training alike: SiLU of the feed-forward block with its derivative, and the
// adapter nonlinearity phi of ADAPTERS.md with phi'. Inline, so that the
// forward pass, the training ops and the tests compute the same expression.
#pragma once
#include <cmath>

namespace flora {

inline float silu(float g) { return g / (1.0f + std::exp(-g)); }

// silu'(g) = s (1 + g (1 - s)), s = sigmoid(g). Both s and 1 - s come from
// e = exp(-|g|) in (0, 1]: no overflow for any g, and no cancellation in
// 1 - s for large g (where 1 - 1/(1 + exp(-g)) would lose all its digits).
inline float silu_derivative(float g) {
  const float e = std::exp(-std::fabs(g));
  const float big = 1.0f / (1.0f + e), small = e * big;  // sigmoid(|g|), sigmoid(-|g|)
  const float s = g >= 0 ? big : small, one_minus_s = g >= 0 ? small : big;
  return s * (1.0f + g * one_minus_s);
}

// phi of ADAPTERS.md, applied to the adapter's low-rank z.
enum class Nonlinearity { Identity, ReLU, GELU, SiLU };

inline float apply_nonlinearity(Nonlinearity n, float z) {
  switch (n) {
    case Nonlinearity::ReLU:
      return z > 0 ? z : 0.0f;
    case Nonlinearity::GELU:  // the erf form
      return 0.5f * z * (1.0f + std::erf(z * 0.70710678118654752f));
    case Nonlinearity::SiLU:
      return silu(z);
    case Nonlinearity::Identity:
      break;
  }
  return z;
}

// phi'(z); ReLU'(0) = 0.
inline float nonlinearity_derivative(Nonlinearity n, float z) {
  switch (n) {
    case Nonlinearity::ReLU:
      return z > 0 ? 1.0f : 0.0f;
    case Nonlinearity::GELU:
      // d/dz [z Phi(z)] = Phi(z) + z phi(z), phi the standard normal density.
      return 0.5f * (1.0f + std::erf(z * 0.70710678118654752f)) + z * 0.39894228040143268f * std::exp(-0.5f * z * z);
    case Nonlinearity::SiLU:
      return silu_derivative(z);
    case Nonlinearity::Identity:
      break;
  }
  return 1.0f;
}

}  // namespace flora
