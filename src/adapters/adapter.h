// Adapter weights: for each layer and target the matrices A (r, in), B (out, r)
// and C (r, r) that the configuration asks for, kept in f32 (they are small:
// rank 32 on all seven projections of the 1B shape is 1.4% of its weights).
// Files: a directory as PEFT writes one, adapter_config.json and
// adapter_model.safetensors, tensors named
//   base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight   (LoRA)
//   base_model.model.model.layers.N.mlp.down_proj.flora_C.weight     (FLoRA)
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "adapters/config.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "ops/ops.h"

namespace flora {

// A row-major f32 matrix; empty (rows == 0) when the configuration has none.
struct AdapterMatrix {
  int64_t rows = 0, cols = 0;
  std::vector<float> data;  // (rows, cols)
  bool empty() const { return rows == 0; }
  MatrixRef ref() const { return MatrixRef{data.data(), DType::F32, rows, cols, 0}; }
};

struct LayerAdapter {
  std::array<AdapterMatrix, kTargets> A;        // (r, in_m) where config.forward[m]
  std::array<AdapterMatrix, kTargets> B;        // (out_m, r) where LoRA forward[m] or FLoRA backward[m]
  std::array<AdapterMatrix, kTargets> C;        // (r, r) where FLoRA carry[m]
  AdapterMatrix& matrix(Target t, char which);  // which: 'A', 'B' or 'C'
  const AdapterMatrix& matrix(Target t, char which) const;
};

// in/out sizes of a target's base projection: q (q_dim, d), o (d, q_dim), ...
int64_t target_in(const LlamaConfig& c, Target t);
int64_t target_out(const LlamaConfig& c, Target t);

class Adapter {
 public:
  AdapterConfig config;
  std::vector<LayerAdapter> layers;  // one per model layer
  std::string origin;                // the directory load() read, empty when made in memory

  // Matrices shaped for `model` and filled per config.init: lora (A Kaiming-
  // uniform a = sqrt(5) as PEFT, B = C = 0), zero (all 0), random (every matrix
  // non-zero, uniform with std 1/sqrt(fan_in), for tests and benchmarks).
  static Adapter create(const AdapterConfig& config, const LlamaConfig& model, uint64_t seed);
  // Reads DIR/adapter_config.json and DIR/adapter_model.safetensors (F32, BF16
  // or F16 tensors) and checks every tensor against the model's shapes: a
  // missing or unexpected tensor, a wrong shape or dtype, an unknown module, a
  // NaN or Inf value is one clear error naming the file and the tensor.
  static Adapter load(const std::string& dir, const LlamaConfig& model);
  // A path that is a file is read as llama.cpp's GGUF LoRA (adapters/gguf_lora.h).
  // Writes DIR/adapter_config.json and DIR/adapter_model.safetensors (F32), atomically.
  void save(const std::string& dir) const;

  int64_t parameter_count() const;
  // The same configuration and shapes, every value 0 (gradients, optimiser state).
  Adapter zeros_like() const;
  size_t bytes() const { return static_cast<size_t>(parameter_count()) * sizeof(float); }
  // PEFT's tensor name for matrix `which` ("A", "B", "C") of target t in layer l.
  static std::string tensor_name(const AdapterConfig& config, int64_t layer, Target t, char which);

  // Fills `layers` with every matrix `config` asks for, looked up by its PEFT
  // name through `find` (null: absent) and checked (dtype F32, BF16 or F16,
  // shape, finite values); `names` are all the tensors of the file, none of
  // which may be one the configuration does not ask for. Messages name
  // `file` and `asker` (what holds the configuration). The two file formats
  // of an adapter share it.
  // `file_name_of` (optional) gives a missing tensor's name as the file spells it.
  void read_tensors(const LlamaConfig& model, const std::function<const TensorView*(const std::string&)>& find,
                    const std::vector<std::string>& names, const std::string& file, const std::string& asker,
                    const std::function<std::string(const std::string&)>& file_name_of = {});
};

// Checks that `adapter` fits the model `model_name` (its directory, for the
// message) of configuration `model`: one LayerAdapter per model layer, every
// matrix the adapter's configuration asks for present with the shape the model
// gives it, and none it does not ask for. The one check that merging and
// attaching share: an adapter made for another model (or edited in memory)
// would otherwise be read out of bounds. Fails naming the adapter, the layer,
// the projection, the expected and the found shape.
void check_adapter_fits(const Adapter& adapter, const LlamaConfig& model, const std::string& model_name);

}  // namespace flora
