// Wall-clock time for progress and benchmarks (steady clock, seconds).
#pragma once
#include <algorithm>
#include <chrono>
#include <vector>

namespace flora {

inline double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Median of a sample (copied, so the caller's order is kept). 0 for empty.
inline double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  auto mid = v.begin() + v.size() / 2;
  std::nth_element(v.begin(), mid, v.end());
  if (v.size() % 2) return *mid;
  return (*mid + *std::max_element(v.begin(), mid)) / 2.0;
}

}  // namespace flora
