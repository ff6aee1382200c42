// BF16 products (ops::set_bf16_products) for the tests that ask for them: a
// process setting, so it is set by an object whose destructor turns it off,
// and a test that fails or throws leaves it off for the tests after it in the
// same binary.
#pragma once
#include "ops/ops.h"

namespace flora::test {

struct Bf16Products {
  explicit Bf16Products(bool on = true) { ops::set_bf16_products(on); }
  ~Bf16Products() { ops::set_bf16_products(false); }
  Bf16Products(const Bf16Products&) = delete;
  Bf16Products& operator=(const Bf16Products&) = delete;
};

}  // namespace flora::test
