#include "adapters/merge.h"

#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <vector>

#include "io/safetensors.h"
#include "io/tensor_store.h"
#include "model/init.h"
#include "model/weights.h"
#include "util/error.h"
#include "util/file.h"

namespace flora {

namespace {

double load_element(const TensorView& t, int64_t k) {
  switch (t.dtype) {
    case DType::F32: {
      float v;
      std::memcpy(&v, t.data + 4 * k, 4);
      return v;
    }
    case DType::BF16:
    case DType::F16: {
      uint16_t h;
      std::memcpy(&h, t.data + 2 * k, 2);
      return t.dtype == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
    }
    default:
      return 0;
  }
}

void store_element(DType dtype, uint8_t* out, int64_t k, double value) {
  const float f = static_cast<float>(value);
  if (dtype == DType::F32) {
    std::memcpy(out + 4 * k, &f, 4);
  } else {
    const uint16_t h = dtype == DType::BF16 ? f32_to_bf16(f) : f32_to_f16(f);
    std::memcpy(out + 2 * k, &h, 2);
  }
}

// W + s * B A (or s * T A for repeat-and-add), in the weight's dtype. W: (out, in).
std::vector<uint8_t> merged_weight(const TensorView& w, const AdapterConfig& config, const AdapterMatrix& A,
                                   const AdapterMatrix& B) {
  const int64_t out = w.shape[0], in = w.shape[1], r = A.rows;
  const double s = config.scale();
  std::vector<uint8_t> bytes(w.nbytes);
  std::vector<double> row(static_cast<size_t>(in));
  for (int64_t i = 0; i < out; ++i) {
    for (int64_t j = 0; j < in; ++j) row[j] = load_element(w, i * in + j);
    if (config.family == AdapterFamily::LoRA) {
      for (int64_t k = 0; k < r; ++k) {
        const double b = s * static_cast<double>(B.data[i * r + k]);
        if (b == 0) continue;
        const float* a = A.data.data() + k * in;
        for (int64_t j = 0; j < in; ++j) row[j] += b * static_cast<double>(a[j]);
      }
    } else {  // repeat-and-add: y[i] += s * z[i mod r]
      const float* a = A.data.data() + (i % r) * in;
      for (int64_t j = 0; j < in; ++j) row[j] += s * static_cast<double>(a[j]);
    }
    for (int64_t j = 0; j < in; ++j) store_element(w.dtype, bytes.data(), i * in + j, row[j]);
  }
  return bytes;
}

}  // namespace

void merge_lora_into_model(const std::string& model_dir, const Adapter& lora, const std::string& out_dir) {
  const AdapterConfig& ac = lora.config;
  if (ac.family == AdapterFamily::FLoRA) {
    for (Target t : kAllTargets) {
      const int i = static_cast<int>(t);
      if (ac.backward[i] || ac.carry[i])
        fail(
            "merge: the FLoRA adapter '{}' has a {} on {}: backward adapters and carries sum the forward adapters of "
            "several projections, so they are not a change of one weight matrix and cannot be merged (only LoRA and "
            "repeat-and-add-only adapters such as ffa can)",
            ac.variant, ac.backward[i] ? "backward adapter" : "carry", target_module(t));
      if (ac.forward[i] && !ac.repeat_add[i])
        fail("merge: the FLoRA adapter '{}' has a forward adapter on {} without repeat-and-add; it cannot be merged",
             ac.variant, target_module(t));
    }
  }
  const std::string config_path = model_dir + "/config.json";
  const LlamaConfig config = LlamaConfig::from_file(config_path);
  check_adapter_fits(lora, config, model_dir);  // the layer count and every matrix's shape
  std::error_code ec;
  if (std::filesystem::exists(out_dir) && std::filesystem::equivalent(model_dir, out_dir, ec))
    fail("merge: --out {} is the model directory itself; write the merged model to a new directory", out_dir);

  const TensorStore store(model_dir);
  // Tensors in Hugging Face's order, then any others the base holds (kept as they are).
  std::vector<std::string> names;
  std::set<std::string> listed;
  for (const TensorSpec& spec : llama_tensor_specs(config)) names.push_back(spec.name), listed.insert(spec.name);
  for (const std::string& n : store.names())
    if (!listed.count(n)) names.push_back(n);
  std::map<std::string, std::pair<int64_t, Target>> adapted;
  for (int64_t l = 0; l < config.num_hidden_layers; ++l)
    for (Target t : kAllTargets)
      if (ac.forward[static_cast<int>(t)])
        adapted[fmt::format("model.layers.{}.{}.weight", l, target_path(t))] = {l, t};

  std::vector<std::vector<uint8_t>> merged;
  merged.reserve(adapted.size());
  std::vector<TensorToWrite> tensors;
  for (const std::string& name : names) {
    const TensorView* found = store.find(name);
    if (!found) {
      if (listed.count(name)) store.get(name);  // fails naming the directory and the tensor
      continue;
    }
    const TensorView& t = *found;
    auto it = adapted.find(name);
    if (it == adapted.end()) {
      tensors.push_back({name, t.dtype, t.shape, t.data});
      continue;
    }
    const auto [l, target] = it->second;
    const int i = static_cast<int>(target);
    const std::vector<int64_t> shape = {target_out(config, target), target_in(config, target)};
    store.get(name, shape);  // checks the shape
    if (t.dtype != DType::F32 && t.dtype != DType::BF16 && t.dtype != DType::F16)
      fail("{}: tensor '{}': expected dtype BF16, F16 or F32, found {}", t.file, name, dtype_name(t.dtype));
    const AdapterMatrix& A = lora.layers[l].A[i];  // shapes checked by check_adapter_fits
    const AdapterMatrix& B = lora.layers[l].B[i];
    merged.push_back(merged_weight(t, ac, A, B));
    tensors.push_back({name, t.dtype, t.shape, merged.back().data()});
  }
  write_model_safetensors(out_dir, tensors, kDefaultMaxShardBytes);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"})
    if (file_exists(model_dir + "/" + f)) write_file_atomic(out_dir + "/" + f, read_file(model_dir + "/" + f));
  write_file_atomic(out_dir + "/config.json", read_file(config_path));
}

}  // namespace flora
