#include "model/init.h"

#include <cmath>
#include <vector>

#include "io/safetensors.h"
#include "model/weights.h"
#include "util/error.h"
#include "util/file.h"
#include "util/random.h"

namespace flora {

namespace {

// Values of one tensor as bytes in `dtype`.
std::vector<uint8_t> random_tensor(const TensorSpec& spec, uint64_t seed, DType dtype) {
  int64_t n = 1;
  for (int64_t s : spec.shape) n *= s;
  const bool is_norm = spec.shape.size() == 1;
  // Uniform on [-a, a] has standard deviation a / sqrt(3).
  const double a = std::sqrt(3.0 / static_cast<double>(spec.shape.back()));
  std::vector<uint8_t> bytes(static_cast<size_t>(n) * dtype_size(dtype));
  uint64_t state = seed ^ fnv1a(spec.name);
  for (int64_t i = 0; i < n; ++i) {
    const double u = uniform01(state);
    const float v = is_norm ? 1.0f : static_cast<float>((2.0 * u - 1.0) * a);
    switch (dtype) {
      case DType::F32:
        std::memcpy(bytes.data() + 4 * i, &v, 4);
        break;
      case DType::BF16: {
        uint16_t h = f32_to_bf16(v);
        std::memcpy(bytes.data() + 2 * i, &h, 2);
        break;
      }
      case DType::F16: {
        uint16_t h = f32_to_f16(v);
        std::memcpy(bytes.data() + 2 * i, &h, 2);
        break;
      }
      default:
        fail("init-model: dtype {} is not supported (bf16, f16 or f32)", dtype_name(dtype));
    }
  }
  return bytes;
}

}  // namespace

void write_random_model(const LlamaConfig& config, const std::string& dir, uint64_t seed, DType dtype,
                        size_t max_shard_bytes) {
  make_directories(dir);
  LlamaConfig c = config;
  c.torch_dtype = dtype == DType::BF16 ? "bfloat16" : dtype == DType::F16 ? "float16" : "float32";
  const auto specs = llama_tensor_specs(c);
  std::vector<std::vector<uint8_t>> data;
  std::vector<TensorToWrite> tensors;
  data.reserve(specs.size());
  for (const auto& spec : specs) {
    data.push_back(random_tensor(spec, seed, dtype));
    tensors.push_back({spec.name, dtype, spec.shape, data.back().data()});
  }
  write_model_safetensors(dir, tensors, max_shard_bytes);
  write_file_atomic(dir + "/config.json", c.to_json().dump(2) + "\n");
}

}  // namespace flora
