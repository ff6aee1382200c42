// The model's elementwise functions in double, written from their definitions
// (not from ops/activations.h, whose f32 expressions they check): SiLU and the
// adapter nonlinearity phi of ADAPTERS.md.
#pragma once
#include <cmath>

#include "ops/activations.h"

namespace flora::test {

inline double silu_ref(double g) { return g / (1.0 + std::exp(-g)); }

inline double phi_ref(Nonlinearity n, double z) {
  switch (n) {
    case Nonlinearity::ReLU:
      return z > 0 ? z : 0;
    case Nonlinearity::GELU:  // z Phi(z), the erf form
      return 0.5 * z * (1 + std::erf(z / std::sqrt(2.0)));
    case Nonlinearity::SiLU:
      return silu_ref(z);
    case Nonlinearity::Identity:
      break;
  }
  return z;
}

}  // namespace flora::test
