// Bad values are errors, not undefined behaviour: the scan for NaN and Inf on
// raw F32/BF16/F16 bits, and a model whose weights hold one refused at load
// (naming the file, the tensor and the element) unless allow_nonfinite.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "io/tensor_store.h"
#include "model/init.h"
#include "model/weights.h"
#include "scratch_dir.h"
#include "util/dtype.h"
#include "util/file.h"

namespace flora {
namespace {

#define EXPECT_HAS(msg, word) EXPECT_NE((msg).find(word), std::string::npos) << "'" << (word) << "' not in: " << (msg)

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// n values of dtype, all finite (including the largest and subnormals), as bytes.
std::vector<uint8_t> finite_values(DType dtype, int64_t n) {
  std::vector<uint8_t> bytes(static_cast<size_t>(n) * dtype_size(dtype));
  const float pattern[] = {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 1e-7f, -3e38f, 3e38f};
  for (int64_t i = 0; i < n; ++i) {
    float v = pattern[i % 8];
    if (dtype == DType::F16 && std::fabs(v) > 65504.0f) v = v > 0 ? 65504.0f : -65504.0f;
    if (dtype == DType::F32) {
      std::memcpy(bytes.data() + 4 * i, &v, 4);
    } else {
      const uint16_t h = dtype == DType::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    }
  }
  // The largest finite values of the 16-bit formats (exponent one below all ones).
  if (dtype != DType::F32 && n > 3) {
    const uint16_t big = dtype == DType::BF16 ? 0x7f7f : 0x7bff;
    std::memcpy(bytes.data() + 2 * 3, &big, 2);
  }
  return bytes;
}

void put(std::vector<uint8_t>& bytes, DType dtype, int64_t k, float v) {
  if (dtype == DType::F32) {
    std::memcpy(bytes.data() + 4 * k, &v, 4);
  } else {
    const uint16_t h = dtype == DType::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
    std::memcpy(bytes.data() + 2 * k, &h, 2);
  }
}

TEST(FirstNonfinite, FindsTheFirstOnRawBits) {
  for (DType dtype : {DType::F32, DType::BF16, DType::F16}) {
    // Sizes below, at and across the scan's block boundaries, at odd offsets.
    for (int64_t n : {1, 7, 1023, 1024, 1025, 5000}) {
      std::vector<uint8_t> base = finite_values(dtype, n + 1);
      for (int shift : {0, 1}) {  // safetensors data need not be aligned
        const uint8_t* p = base.data() + shift * dtype_size(dtype);
        EXPECT_EQ(first_nonfinite(p, dtype, n), -1) << dtype_name(dtype) << " n " << n;
      }
      for (int64_t k : {int64_t{0}, n / 2, n - 1}) {
        for (float bad : {kNaN, kInf, -kInf}) {
          std::vector<uint8_t> b = finite_values(dtype, n);
          put(b, dtype, k, bad);
          if (k + 1 < n) put(b, dtype, n - 1, kNaN);  // a later one does not matter
          EXPECT_EQ(first_nonfinite(b.data(), dtype, n), k) << dtype_name(dtype) << " n " << n;
          EXPECT_EQ(nonfinite_name(b.data(), dtype, k), std::isnan(bad) ? "NaN" : bad > 0 ? "+Inf" : "-Inf");
        }
      }
    }
  }
  // A NaN payload of the 16-bit formats, written bit by bit.
  const uint16_t bf16_nan = 0xffc1, f16_nan = 0x7e01;
  EXPECT_EQ(first_nonfinite(&bf16_nan, DType::BF16, 1), 0);
  EXPECT_EQ(first_nonfinite(&f16_nan, DType::F16, 1), 0);
  EXPECT_EQ(nonfinite_name(&bf16_nan, DType::BF16, 0), "NaN");
  EXPECT_EQ(first_nonfinite(&bf16_nan, DType::I32, 0), -1);
}

class ModelValues : public ScratchDirTest {
 protected:
  // A tiny random model of `dtype` with value `bad` at element k of tensor
  // `name`, written by the project's writer into DIR.
  std::string poisoned(DType dtype, const std::string& name, int64_t k, float bad) {
    const std::string clean = path("clean-" + std::string(dtype_name(dtype)));
    if (!file_exists(clean + "/config.json")) write_random_model(LlamaConfig::preset("tiny"), clean, 7, dtype);
    const TensorStore store(clean);
    std::vector<uint8_t> copy;
    std::vector<TensorToWrite> tensors;
    for (const std::string& n : store.names()) {
      const TensorView& t = store.get(n);
      tensors.push_back({n, t.dtype, t.shape, t.data});
      if (n == name) {
        copy.assign(t.data, t.data + t.nbytes);
        put(copy, dtype, k, bad);
        tensors.back().data = copy.data();
      }
    }
    const std::string dir = path("bad-" + std::string(dtype_name(dtype)));
    make_directories(dir);
    write_safetensors(dir + "/model.safetensors", tensors);
    write_file_atomic(dir + "/config.json", read_file(clean + "/config.json"));
    return dir;
  }
};

TEST_F(ModelValues, NonfiniteWeightsAreRefusedNamingTheTensor) {
  struct Case {
    DType dtype;
    const char* tensor;
    int64_t k;
    float bad;
    const char* what;
  };
  for (const Case& c : {Case{DType::BF16, "model.layers.1.mlp.down_proj.weight", 77, kNaN, "NaN"},
                        Case{DType::F16, "model.embed_tokens.weight", 0, kInf, "+Inf"},
                        Case{DType::F32, "model.layers.0.input_layernorm.weight", 5, -kInf, "-Inf"}}) {
    const std::string dir = poisoned(c.dtype, c.tensor, c.k, c.bad);
    for (bool mmap : {false, true}) {
      const std::string msg = error_of([&] { LlamaModel::load(dir, ModelLoadOptions{mmap, false}); });
      EXPECT_HAS(msg, dir + "/model.safetensors");
      EXPECT_HAS(msg, std::string("tensor '") + c.tensor + "'");
      EXPECT_HAS(msg, fmt::format("element {} is {}", c.k, c.what));
      EXPECT_HAS(msg, "--allow-nonfinite");
      // Allowed: it loads, and the report names the same place once.
      const auto model = LlamaModel::load(dir, ModelLoadOptions{mmap, true});
      EXPECT_HAS(model->nonfinite_report(), std::string("tensor '") + c.tensor + "'");
      EXPECT_HAS(model->nonfinite_report(), "1 of the model's tensors");
    }
  }
  // Finite weights: no report.
  EXPECT_EQ(LlamaModel::load(path("clean-BF16"))->nonfinite_report(), "");
}

}  // namespace
}  // namespace flora
