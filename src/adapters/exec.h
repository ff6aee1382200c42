// From an Adapter to what the forward pass runs: AdapterExec (matrices as
// MatrixRefs into the adapter, flags, scale), or, for a merged LoRA, the
// model's layer weights with W + s B A in place of the adapted matrices.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "adapters/adapter.h"
#include "model/adapter_exec.h"
#include "model/weights.h"
#include "util/memory.h"

namespace flora {

// The view holds pointers into `adapter`, which must outlive it. Attaching is
// O(adapter): no base weight is copied. For a LoRA adapter, `execution` says
// how it runs (Merged is not an AdapterExec: use MergedLayers).
AdapterExec make_adapter_exec(const Adapter& adapter, LoraExecution execution);

// The training pass's view of `adapter` and of `grads` (the same shapes, its
// gradient accumulators); both must outlive the view.
AdapterTrainView make_adapter_train_view(const Adapter& adapter, Adapter& grads);
// The same from pointers; none when adapter is null (no adapter is trained).
std::optional<AdapterTrainView> make_adapter_train_view(const Adapter* adapter, Adapter* grads);

// A LoRA adapter merged into copies of the adapted matrices, in the base dtype
// (W' = W + s B A computed in f32, then rounded). Costs O(model) at attach, as
// merging does; the forward pass then runs at the base model's speed.
struct MergedLayers {
  std::vector<LayerWeights> layers;
  AnonymousBuffer storage;  // the merged matrices, huge pages like the base copy
};
MergedLayers merge_lora_layers(const LlamaModel& model, const Adapter& lora);

// An adapter attached to a model, ready for Forward(model, pool, context,
// exec(), layers()): FLoRA and unmerged LoRA as an AdapterExec over the
// adapter's matrices, a merged LoRA as replacement layer weights.
class AttachedAdapter {
 public:
  // dtype: F32 runs the adapter's own matrices; BF16 runs a rounded copy
  // (half the bytes read per token, as the base weights are read).
  AttachedAdapter(const LlamaModel& model, Adapter adapter, LoraExecution execution, DType dtype = DType::F32);
  AttachedAdapter(const AttachedAdapter&) = delete;  // exec_ points into adapter_
  AttachedAdapter& operator=(const AttachedAdapter&) = delete;
  const AdapterExec* exec() const { return merged_ ? nullptr : &exec_; }
  const std::vector<LayerWeights>* layers() const { return merged_ ? &merged_layers_.layers : nullptr; }
  const Adapter& adapter() const { return adapter_; }
  // The variant as run: "ffba", "lora", "pf-lora", "lora-merged", ...
  std::string variant() const;

 private:
  Adapter adapter_;
  LoraExecution execution_;
  bool merged_ = false;
  AdapterExec exec_;
  MergedLayers merged_layers_;
  std::vector<std::vector<uint16_t>> bf16_copies_;  // the BF16 matrices exec_ points to
};

}  // namespace flora
