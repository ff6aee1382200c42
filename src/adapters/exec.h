// From an Adapter to what the forward pass runs: AdapterExec (matrices as
// MatrixRefs into the adapter, flags, scale), or, for a merged LoRA, the
// model's layer weights with W + s B A in place of the adapted matrices.
#pragma once
#include <cstdint>
#include <vector>

#include "adapters/adapter.h"
#include "model/adapter_exec.h"
#include "model/weights.h"

namespace flora {

// The view holds pointers into `adapter`, which must outlive it. Attaching is
// O(adapter): no base weight is copied. For a LoRA adapter, `execution` says
// how it runs (Merged is not an AdapterExec: use MergedLayers).
AdapterExec make_adapter_exec(const Adapter& adapter, LoraExecution execution);

// A LoRA adapter merged into copies of the adapted matrices, in the base dtype
// (W' = W + s B A computed in f32, then rounded). Costs O(model) at attach, as
// merging does; the forward pass then runs at the base model's speed.
struct MergedLayers {
  std::vector<LayerWeights> layers;
  std::vector<std::vector<uint8_t>> storage;  // the merged matrices' bytes
};
MergedLayers merge_lora_layers(const LlamaModel& model, const Adapter& lora);

}  // namespace flora
