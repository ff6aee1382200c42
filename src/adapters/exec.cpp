#include "adapters/exec.h"

#include <cstring>

#include "ops/reference.h"
#include "util/error.h"

namespace flora {

AdapterExec make_adapter_exec(const Adapter& adapter, LoraExecution execution) {
  const AdapterConfig& c = adapter.config;
  AdapterExec e;
  if (c.family == AdapterFamily::FLoRA) {
    e.mode = AdapterMode::FLoRA;
  } else if (execution == LoraExecution::Unfused) {
    e.mode = AdapterMode::LoRAUnfused;
  } else if (execution == LoraExecution::PartiallyFused) {
    e.mode = AdapterMode::LoRAPartiallyFused;
  } else {
    fail("a merged LoRA runs as merged weights (merge_lora_layers), not as an adapter");
  }
  e.rank = c.rank;
  e.scale = static_cast<float>(c.scale());
  e.nonlinearity = c.nonlinearity;
  e.forward = c.forward;
  e.repeat_add = c.repeat_add;
  e.backward = c.backward;
  e.carry = c.carry;
  if (c.family == AdapterFamily::LoRA) e.backward = c.forward;  // LoRA: B wherever A
  for (const LayerAdapter& la : adapter.layers) {
    AdapterExec::Layer l;
    for (int m = 0; m < kTargets; ++m) {
      if (!la.A[m].empty()) l.A[m] = la.A[m].ref();
      if (!la.B[m].empty()) l.B[m] = la.B[m].ref();
      if (!la.C[m].empty()) l.C[m] = la.C[m].ref();
    }
    e.layers.push_back(l);
  }
  return e;
}

AdapterTrainView make_adapter_train_view(const Adapter& adapter, Adapter& grads) {
  if (grads.layers.size() != adapter.layers.size())
    fail("adapter gradients: {} layers, expected {} (the adapter's)", grads.layers.size(), adapter.layers.size());
  AdapterTrainView v;
  // The execution only matters to the forward pass; training computes LoRA's products directly.
  v.values = make_adapter_exec(adapter, LoraExecution::Unfused);
  v.grads.resize(grads.layers.size());
  for (size_t l = 0; l < grads.layers.size(); ++l)
    for (int m = 0; m < kTargets; ++m) {
      const Target t = static_cast<Target>(m);
      for (char which : {'A', 'B', 'C'}) {
        AdapterMatrix& g = grads.layers[l].matrix(t, which);
        const AdapterMatrix& a = adapter.layers[l].matrix(t, which);
        if (g.rows != a.rows || g.cols != a.cols)
          fail("adapter gradients: layer {} {} of {}: ({}, {}), expected ({}, {})", l, which, target_module(t), g.rows,
               g.cols, a.rows, a.cols);
        float*& dst = which == 'A' ? v.grads[l].A[m] : which == 'B' ? v.grads[l].B[m] : v.grads[l].C[m];
        dst = g.empty() ? nullptr : g.data.data();
      }
    }
  return v;
}

std::optional<AdapterTrainView> make_adapter_train_view(const Adapter* adapter, Adapter* grads) {
  if (!adapter) return std::nullopt;
  if (!grads) fail("adapter gradients: none given for the trained adapter");
  return make_adapter_train_view(*adapter, *grads);
}

MergedLayers merge_lora_layers(const LlamaModel& model, const Adapter& lora) {
  if (lora.config.family != AdapterFamily::LoRA)
    fail("only LoRA adapters can be merged into the base weights (this one is {})", lora.config.variant);
  // The products below index A, B and W by the model's shapes.
  check_adapter_fits(lora, model.config(), model.dir());
  MergedLayers merged;
  merged.layers = model.layers();
  const float s = static_cast<float>(lora.config.scale());
  const int64_t r = lora.config.rank;
  auto bytes_of = [](const MatrixRef& m) {
    return (static_cast<size_t>(m.rows * m.cols) * dtype_size(m.dtype) + 63) & ~size_t{63};
  };
  size_t total = 0;
  for (const LayerWeights& w : merged.layers) {
    for (int m = 0; m < kTargets; ++m) {
      if (!lora.config.forward[m]) continue;
      const MatrixRef& W = projection(w, static_cast<Target>(m));
      // W + s B A stored back in W's block format would be requantized: a
      // different base, not the merged adapter.
      if (is_quantized(W.dtype))
        fail(
            "lora-merged: the base's weights are {} blocks, which cannot hold W + s B A without requantizing the "
            "base (expected BF16, F16 or F32 weights; run the adapter unmerged: lora or pf-lora)",
            dtype_name(W.dtype));
      total += bytes_of(W);
    }
  }
  merged.storage = AnonymousBuffer(total, /*huge_pages=*/true);
  size_t used = 0;
  for (size_t l = 0; l < merged.layers.size(); ++l) {
    LayerWeights& w = merged.layers[l];
    for (int m = 0; m < kTargets; ++m) {
      if (!lora.config.forward[m]) continue;
      const AdapterMatrix& A = lora.layers[l].A[m];  // (r, in)
      const AdapterMatrix& B = lora.layers[l].B[m];  // (out, r)
      MatrixRef& W = projection(w, static_cast<Target>(m));
      const size_t es = dtype_size(W.dtype);
      uint8_t* out = merged.storage.data() + used;
      used += bytes_of(W);
      std::vector<float> ba(W.cols);
      for (int64_t i = 0; i < W.rows; ++i) {
        std::fill(ba.begin(), ba.end(), 0.0f);
        for (int64_t k = 0; k < r; ++k) {
          const float b = s * B.data[i * r + k];
          const float* a = A.data.data() + k * W.cols;
          for (int64_t j = 0; j < W.cols; ++j) ba[j] += b * a[j];
        }
        for (int64_t j = 0; j < W.cols; ++j) {
          const float v = static_cast<float>(ref::weight_at(W, i, j)) + ba[j];
          uint8_t* p = out + (i * W.cols + j) * es;
          if (W.dtype == DType::F32) {
            std::memcpy(p, &v, 4);
          } else {
            const uint16_t h = W.dtype == DType::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
            std::memcpy(p, &h, 2);
          }
        }
      }
      W = MatrixRef{out, W.dtype, W.rows, W.cols, 0};
    }
  }
  return merged;
}

}  // namespace flora

namespace flora {

AttachedAdapter::AttachedAdapter(const LlamaModel& model, Adapter adapter, LoraExecution execution, DType dtype)
    : adapter_(std::move(adapter)), execution_(execution) {
  // The forward pass reads the matrices at the model's shapes: one that does
  // not fit would be read out of bounds, so it is refused here whatever the mode.
  check_adapter_fits(adapter_, model.config(), model.dir());
  merged_ = adapter_.config.family == AdapterFamily::LoRA && execution == LoraExecution::Merged;
  if (merged_) {
    merged_layers_ = merge_lora_layers(model, adapter_);
    return;
  }
  exec_ = make_adapter_exec(adapter_, execution);
  if (dtype == DType::F32) return;
  if (dtype != DType::BF16) fail("adapter dtype {}: expected F32 or BF16", dtype_name(dtype));
  for (AdapterExec::Layer& l : exec_.layers)
    for (auto* mats : {&l.A, &l.B, &l.C})
      for (MatrixRef& m : *mats) {
        if (!m.data) continue;
        const float* src = static_cast<const float*>(m.data);
        std::vector<uint16_t>& copy = bf16_copies_.emplace_back(static_cast<size_t>(m.rows * m.cols));
        for (size_t i = 0; i < copy.size(); ++i) copy[i] = f32_to_bf16(src[i]);
        m.data = copy.data();
        m.dtype = DType::BF16;
      }
}

std::string AttachedAdapter::variant() const {
  if (adapter_.config.family == AdapterFamily::FLoRA) return adapter_.config.variant;
  return lora_variant_name(execution_);
}

}  // namespace flora
