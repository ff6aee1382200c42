// The one numeric comparison of the test suite. A comparison must fail on NaN:
// `std::max(worst, fabs(got - want))` drops a NaN (every comparison with NaN is
// false), so an all-NaN result would pass it. Here a non-finite value where
// the other side is finite, or a NaN anywhere, makes the error +infinity,
// which no tolerance accepts. Equal infinities (same sign) count as exact: a
// -inf logit of a masked token is a right answer. tests/test_compare.cpp holds
// these rules.
#pragma once
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

namespace flora::test {

// |got - want|, or +inf when either is NaN or only one is infinite.
inline double element_error(double got, double want) {
  if (std::isfinite(got) && std::isfinite(want)) return std::fabs(got - want);
  if (got == want) return 0.0;  // the same infinity; NaN never equals anything
  return std::numeric_limits<double>::infinity();
}

// Largest element_error over n values.
template <typename G, typename W>
double max_abs_error(const G* got, const W* want, size_t n) {
  double worst = 0;
  for (size_t i = 0; i < n; ++i) {
    const double e = element_error(static_cast<double>(got[i]), static_cast<double>(want[i]));
    if (e > worst) worst = e;
  }
  return worst;
}
template <typename G, typename W>
double max_abs_error(const std::vector<G>& got, const std::vector<W>& want) {
  if (got.size() != want.size()) return std::numeric_limits<double>::infinity();
  return max_abs_error(got.data(), want.data(), got.size());
}

// Largest element_error / (atol + rtol |want|) over n values: <= 1 passes.
template <typename G, typename W>
double max_error_ratio(const G* got, const W* want, size_t n, double atol, double rtol) {
  double worst = 0;
  for (size_t i = 0; i < n; ++i) {
    const double w = static_cast<double>(want[i]);
    const double e = element_error(static_cast<double>(got[i]), w);
    const double r = e == 0 ? 0.0 : e / (atol + rtol * std::fabs(w));
    if (!(r <= worst)) worst = r;  // also takes a NaN ratio (inf / inf) as the worst
  }
  return std::isnan(worst) ? std::numeric_limits<double>::infinity() : worst;
}

// Largest |v|, +inf if any value is not finite (for tolerances relative to a
// tensor's scale, which must not hide a non-finite reference).
template <typename T>
double max_magnitude(const T* v, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) {
    const double a = std::fabs(static_cast<double>(v[i]));
    if (!(a <= m)) m = std::isnan(a) ? std::numeric_limits<double>::infinity() : a;
  }
  return m;
}

}  // namespace flora::test
