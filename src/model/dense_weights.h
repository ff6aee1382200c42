// Every tensor of a Llama model widened to f32, by Hugging Face name, in the
// order of llama_tensor_specs: the trainable weights of full fine-tuning and,
// created as zeros, their gradients. Full fine-tuning keeps these f32 masters
// as PyTorch's fp32 training does; the checkpoint it writes is a model
// directory that flora and transformers load.
#pragma once
#include <string>
#include <vector>

#include "model/train_pass.h"
#include "model/weights.h"

namespace flora {

struct DenseWeights {
  LlamaConfig config;
  std::vector<TensorSpec> specs;
  std::vector<std::vector<float>> data;  // data[i]: specs[i]'s shape, row-major

  static DenseWeights from_model(const LlamaModel& model);
  static DenseWeights zeros(const LlamaConfig& config);
  float* find(const std::string& name);  // fails naming the tensor when absent
  const float* find(const std::string& name) const;
  int64_t size() const;                  // elements in all

  // Views for TrainPass: F32 MatrixRefs / gradient pointers into `data`.
  WeightsView train_weights() const;
  TrainGrads train_grads();
  // Writes DIR/config.json and DIR/model.safetensors (dtype F32 or BF16),
  // atomically per file.
  void save(const std::string& dir, DType dtype) const;
};

}  // namespace flora
