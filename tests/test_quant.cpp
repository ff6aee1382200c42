// The block codecs of ops/quant.h against ggml itself and against an
// independent twin.
//
// ggml: libggml-base.so of the llama.cpp that scripts/setup.sh installs (node-
// llama-cpp's prebuilt CPU binaries), loaded with dlopen; its absence is a
// failure, not a skip. For rows of many kinds and lengths, flora's quantized
// bytes must equal those of ggml's reference quantizers, and flora's
// dequantized floats those of ggml's dequantize_row_*, bit for bit (memcmp).
// That is a design guarantee, not luck: ops/quant.cpp performs ggml's IEEE
// operations in ggml's order, and is compiled with -ffp-contract=off
// (CMakeLists.txt) while that library has no FMA code at all (it is built for
// baseline x86-64), so no product-sum is fused on either side.
//
// The twin: tools/quant_twin.py (numpy), written from the format description
// alone, wrote tests/fixtures/quant/ (inputs, its blocks, its dequantized
// values); flora must reproduce those files too.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "ops/formats.h"
#include "ops/quant.h"
#include "util/dtype.h"
#include "util/error.h"
#include "util/file.h"
#include "util/json.h"

namespace flora {
namespace {

constexpr const char* kGgmlBase =
    FLORA_SOURCE_DIR "/.deps/npm/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so";

// ggml's C functions, with ggml's signatures (blocks as void*).
struct Ggml {
  using Quantize = void (*)(const float*, void*, int64_t);
  using Dequantize = void (*)(const void*, float*, int64_t);
  void* handle = nullptr;
  std::string error;
  float (*fp16_to_fp32)(uint16_t) = nullptr;
  uint16_t (*fp32_to_fp16)(float) = nullptr;
  Quantize quantize[4] = {};
  Dequantize dequantize[4] = {};

  Ggml() {
    handle = dlopen(kGgmlBase, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      error = std::string(dlerror() ? dlerror() : "dlopen failed") + " (scripts/setup.sh installs it)";
      return;
    }
    auto sym = [&](const char* name) {
      void* p = dlsym(handle, name);
      if (!p) error += std::string(error.empty() ? "" : "; ") + "no symbol " + name;
      return p;
    };
    fp16_to_fp32 = reinterpret_cast<float (*)(uint16_t)>(sym("ggml_fp16_to_fp32"));
    fp32_to_fp16 = reinterpret_cast<uint16_t (*)(float)>(sym("ggml_fp32_to_fp16"));
    const char* q[] = {"quantize_row_q8_0_ref", "quantize_row_q4_0_ref", "quantize_row_q4_K_ref",
                       "quantize_row_q6_K_ref"};
    const char* dq[] = {"dequantize_row_q8_0", "dequantize_row_q4_0", "dequantize_row_q4_K", "dequantize_row_q6_K"};
    for (int i = 0; i < 4; ++i) {
      quantize[i] = reinterpret_cast<Quantize>(sym(q[i]));
      dequantize[i] = reinterpret_cast<Dequantize>(sym(dq[i]));
    }
  }
};

const Ggml& ggml() {
  static const Ggml g;
  return g;
}

constexpr DType kBlockTypes[] = {DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K};

int64_t block_elems(DType t) { return weight_format(t, "test").block_elems; }

// ---- the rows

struct Row {
  std::string kind;
  std::vector<float> x;
};

// Rows of n values of every kind the quantizers treat specially.
std::vector<Row> rows_of(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto draw = [&](float scale) {
    std::vector<float> v(n);
    for (float& x : v) x = scale * normal(rng);
    return v;
  };
  std::vector<Row> rows;
  rows.push_back({"normal", draw(1.0f)});
  rows.push_back({"weights", draw(0.02f)});  // a trained layer's scale
  std::vector<float> outliers = draw(1.0f);
  for (int64_t i = 0; i < n; i += 37) outliers[i] *= 100.0f;  // one in a block now and then, of either sign
  rows.push_back({"outliers", outliers});
  rows.push_back({"zero", std::vector<float>(n, 0.0f)});
  rows.push_back({"tiny", draw(1e-20f)});
  rows.push_back({"subnormal", draw(1e-41f)});
  rows.push_back({"huge", draw(1e4f)});        // scales near the top of f16
  rows.push_back({"beyond_f16", draw(1e6f)});  // scales that overflow f16
  rows.push_back({"constant", std::vector<float>(n, 0.37f)});
  rows.push_back({"negative_constant", std::vector<float>(n, -2.5f)});
  std::vector<float> positive = draw(1.0f);
  for (float& x : positive) x = std::fabs(x) + 0.5f;  // min > 0: the K-quants' min clamps to 0
  rows.push_back({"positive", positive});
  // Values on the rounding ties: with 127 (Q8_0) or -8 (Q4_0) in every block
  // the scale is 1, and halves land exactly between two levels.
  std::vector<float> ties(n);
  for (int64_t i = 0; i < n; ++i) ties[i] = i % 32 == 0 ? 127.0f : float(int64_t(rng() % 255) - 127) + 0.5f;
  rows.push_back({"ties_q8", ties});
  for (int64_t i = 0; i < n; ++i) ties[i] = i % 32 == 0 ? -8.0f : float(int64_t(rng() % 16) - 8) + 0.5f;
  rows.push_back({"ties_q4", ties});
  std::vector<float> sparse(n, 0.0f);
  for (int64_t i = 0; i < n; i += 29) sparse[i] = normal(rng);
  rows.push_back({"sparse", sparse});
  return rows;
}

::testing::AssertionResult same_bytes(const void* a, const void* b, size_t n, const std::string& what) {
  if (std::memcmp(a, b, n) == 0) return ::testing::AssertionSuccess();
  const auto* p = static_cast<const uint8_t*>(a);
  const auto* q = static_cast<const uint8_t*>(b);
  size_t i = 0;
  while (p[i] == q[i]) ++i;
  return ::testing::AssertionFailure() << what << ": first difference at byte " << i << " of " << n << " (" << int(p[i])
                                       << ", expected " << int(q[i]) << ")";
}

class Codec : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override { ASSERT_TRUE(ggml().error.empty()) << kGgmlBase << ": " << ggml().error; }
  int index() const { return int(std::find(std::begin(kBlockTypes), std::end(kBlockTypes), GetParam()) - kBlockTypes); }
};

// flora's blocks are ggml's reference blocks, and flora's dequantized values
// ggml's, for every kind of row at several lengths (one block, a few, a
// Llama row).
TEST_P(Codec, BitIdenticalToGgml) {
  const DType type = GetParam();
  const int64_t B = block_elems(type);
  std::mt19937 rng(1234 + index());
  for (int64_t blocks : {1, 2, 3, 8, 17}) {
    const int64_t n = blocks * B;
    for (const Row& row : rows_of(n, rng)) {
      SCOPED_TRACE(std::string(dtype_name(type)) + " " + row.kind + " n=" + std::to_string(n));
      const size_t bytes = quantized_bytes(type, n);
      std::vector<uint8_t> mine(bytes, 0xAA), theirs(bytes, 0x55);
      quantize_row(type, row.x.data(), n, mine.data());
      ggml().quantize[index()](row.x.data(), theirs.data(), n);
      EXPECT_TRUE(same_bytes(mine.data(), theirs.data(), bytes, "quantized"));
      std::vector<float> my_values(n, 1.0f), their_values(n, 2.0f);
      dequantize_row(type, theirs.data(), n, my_values.data());
      ggml().dequantize[index()](theirs.data(), their_values.data(), n);
      EXPECT_TRUE(same_bytes(my_values.data(), their_values.data(), n * sizeof(float), "dequantized"));
    }
  }
}

// Dequantizing arbitrary bytes (every scale and level pattern, infinite and
// NaN scales included) gives ggml's floats bit for bit.
TEST_P(Codec, DequantizesArbitraryBytesAsGgml) {
  const DType type = GetParam();
  const int64_t n = 64 * block_elems(type);
  std::mt19937 rng(99 + index());
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<uint8_t> blocks(quantized_bytes(type, n));
    for (uint8_t& b : blocks) b = uint8_t(rng());
    std::vector<float> mine(n), theirs(n);
    dequantize_row(type, blocks.data(), n, mine.data());
    ggml().dequantize[index()](blocks.data(), theirs.data(), n);
    EXPECT_TRUE(same_bytes(mine.data(), theirs.data(), n * sizeof(float), "dequantized random bytes"));
  }
}

// A row as stored and read back stays within the format's step of the
// block's largest |x|: a loose bound, but one that catches a wrong layout
// (swapped nibbles, a sub-block read with another's scale) whatever ggml chose.
TEST_P(Codec, RoundTripIsClose) {
  const DType type = GetParam();
  const int64_t n = 8 * block_elems(type);
  std::mt19937 rng(7 + index());
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(n);
  for (float& v : x) v = normal(rng);
  std::vector<uint8_t> q(quantized_bytes(type, n));
  quantize_row(type, x.data(), n, q.data());
  std::vector<float> y(n);
  dequantize_row(type, q.data(), n, y.data());
  // Relative to the largest |x| the scale covers: Q8_0 half of amax / 127,
  // plus the f16 rounding of the scale; Q4_0 a whole step amax / 8, on the side
  // opposite the extreme value, whose top level 7 d stops a step short of it;
  // the K-quants' fitted scales within their levels' spacing (Q4_K: 15 levels
  // over max - min <= 2 amax; Q6_K: 32 levels over 2 amax).
  const double rel = type == DType::Q8_0   ? 0.5 / 127 + 1e-3
                     : type == DType::Q4_0 ? 1.0 / 8 + 1e-3
                     : type == DType::Q4_K ? 2.0 / 15
                                           : 1.0 / 32;
  const int64_t B = type == DType::Q4_K ? 32 : type == DType::Q6_K ? 16 : 32;  // the scale's reach
  for (int64_t b = 0; b < n; b += B) {
    double amax = 0;
    for (int64_t i = b; i < b + B; ++i) amax = std::max(amax, double(std::fabs(x[i])));
    for (int64_t i = b; i < b + B; ++i) ASSERT_LE(std::fabs(double(y[i]) - x[i]), rel * amax) << "element " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Quant, Codec, ::testing::ValuesIn(kBlockTypes),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(dtype_name(info.param));
                         });

// flora's f16 conversions are ggml's: every half widened, and f32 values of
// every kind narrowed (ties, subnormals, overflow, NaN).
TEST(Half, ConversionsAreGgmls) {
  ASSERT_TRUE(ggml().error.empty()) << kGgmlBase << ": " << ggml().error;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float mine = f16_to_f32(uint16_t(h)), theirs = ggml().fp16_to_fp32(uint16_t(h));
    ASSERT_EQ(std::memcmp(&mine, &theirs, 4), 0) << "half " << h;
  }
  std::mt19937 rng(5);
  std::vector<float> values = {0.0f,
                               -0.0f,
                               65504.0f,
                               65519.99f,
                               65520.0f,
                               1e-8f,
                               5.96e-8f,
                               2.98e-8f,
                               2.99e-8f,
                               std::numeric_limits<float>::infinity(),
                               -std::numeric_limits<float>::infinity(),
                               std::numeric_limits<float>::quiet_NaN(),
                               6.103515625e-05f,
                               6.1e-05f};
  for (int i = 0; i < 1000000; ++i) {
    const uint32_t u = uint32_t(rng());
    float f;
    std::memcpy(&f, &u, 4);
    values.push_back(f);
  }
  for (float f : values) ASSERT_EQ(f32_to_f16(f), ggml().fp32_to_fp16(f)) << f;
}

TEST(Quant, BytesAndErrors) {
  EXPECT_EQ(quantized_bytes(DType::Q8_0, 64), 68u);
  EXPECT_EQ(quantized_bytes(DType::Q4_0, 4096), 4096u / 32 * 18);
  EXPECT_EQ(quantized_bytes(DType::Q4_K, 2048), 8u * 144);
  EXPECT_EQ(quantized_bytes(DType::Q6_K, 512), 2u * 210);
  EXPECT_EQ(quantized_bytes(DType::BF16, 5), 10u);
  EXPECT_EQ(quantized_bytes(DType::F32, 0), 0u);
  try {
    (void)quantized_bytes(DType::Q4_K, 300);
    FAIL() << "no error for a partial block";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("300 elements are not whole 256-element blocks of Q4_K"), std::string::npos)
        << e.what();
  }
  std::vector<float> x(32, 1.0f);
  std::vector<uint8_t> out(64);
  EXPECT_THROW(quantize_row(DType::Q8_0, x.data(), 31, out.data()), Error);
  EXPECT_THROW(quantize_row(DType::I8, x.data(), 32, out.data()), Error);
  EXPECT_THROW(dequantize_row(DType::I32, out.data(), 4, x.data()), Error);
  // The plain formats convert too (flora quantize --type f16|bf16).
  const std::vector<float> v = {1.0f, -2.5f, 3.140625f, 1e-3f};
  std::vector<uint8_t> h(8);
  std::vector<float> back(4);
  for (DType t : {DType::F16, DType::BF16, DType::F32}) {
    h.assign(quantized_bytes(t, 4), 0);
    quantize_row(t, v.data(), 4, h.data());
    dequantize_row(t, h.data(), 4, back.data());
    for (int i = 0; i < 3; ++i) EXPECT_EQ(back[i], v[i]) << dtype_name(t);
    uint16_t bits;
    std::memcpy(&bits, h.data() + 6, 2);
    if (t == DType::F16) {
      EXPECT_EQ(bits, f32_to_f16(1e-3f));
    } else if (t == DType::BF16) {
      EXPECT_EQ(bits, f32_to_bf16(1e-3f));
    }
  }
}

// The block formats have names but no safetensors dtype, and no size per element.
TEST(Quant, DtypesAreNotSafetensors) {
  for (DType t : kBlockTypes) {
    EXPECT_TRUE(is_quantized(t));
    EXPECT_EQ(dtype_size(t), 0u);
    EXPECT_FALSE(parse_dtype(dtype_name(t)).has_value()) << dtype_name(t);
  }
  EXPECT_EQ(dtype_name(DType::Q4_K), "Q4_K");
  EXPECT_EQ(dtype_name(DType::Q8_0), "Q8_0");
  EXPECT_FALSE(is_quantized(DType::BF16));
  EXPECT_EQ(parse_dtype("BF16"), DType::BF16);
}

// ---- the twin's fixture (tests/fixtures/quant, written by tools/quant_twin.py)

std::vector<uint8_t> fixture_bytes(const std::string& name) {
  const std::string s = read_file(std::string(FLORA_SOURCE_DIR) + "/tests/fixtures/quant/" + name);
  return std::vector<uint8_t>(s.begin(), s.end());
}

TEST(QuantTwin, FixtureMatches) {
  const Json meta = read_json_file(std::string(FLORA_SOURCE_DIR) + "/tests/fixtures/quant/meta.json");
  const int64_t rows = meta.at("rows").get<int64_t>(), n = meta.at("n").get<int64_t>();
  const std::vector<uint8_t> inputs = fixture_bytes("inputs.f32");
  ASSERT_EQ(inputs.size(), size_t(rows * n * 4));
  std::vector<float> x(rows * n);
  std::memcpy(x.data(), inputs.data(), inputs.size());
  int checked = 0;
  for (const auto& entry : meta.at("types")) {
    const std::string name = entry.get<std::string>();
    DType type = DType::F32;
    for (DType t : kBlockTypes)
      if (dtype_name(t) == name) type = t;
    ASSERT_TRUE(is_quantized(type)) << name;
    SCOPED_TRACE(name);
    const std::vector<uint8_t> want = fixture_bytes(name + ".blocks");
    const std::vector<uint8_t> want_values = fixture_bytes(name + ".dequant.f32");
    ASSERT_EQ(want.size(), rows * quantized_bytes(type, n));
    ASSERT_EQ(want_values.size(), size_t(rows * n * 4));
    const size_t rb = quantized_bytes(type, n);
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<uint8_t> got(rb);
      quantize_row(type, x.data() + r * n, n, got.data());
      EXPECT_TRUE(same_bytes(got.data(), want.data() + r * rb, rb, "row " + std::to_string(r) + " quantized"));
      std::vector<float> values(n);
      dequantize_row(type, want.data() + r * rb, n, values.data());
      EXPECT_TRUE(same_bytes(values.data(), want_values.data() + r * n * 4, n * 4,
                             "row " + std::to_string(r) + " dequantized"));
    }
    ++checked;
  }
  EXPECT_GE(checked, 2);  // Q8_0 and Q4_0 at least
}

}  // namespace
}  // namespace flora
