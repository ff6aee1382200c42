// A Llama model in memory: its configuration and its weights, memory-mapped
// from a Hugging Face model directory in their stored dtype. The names and
// shapes here are the one list that loading and (later) training follow.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "io/tensor_store.h"
#include "model/config.h"
#include "ops/ops.h"
#include "util/memory.h"

namespace flora {

struct LayerWeights {
  MatrixRef q, k, v;                       // (q_dim, d), (kv_dim, d), (kv_dim, d)
  MatrixRef o;                             // (d, q_dim)
  MatrixRef gate, up;                      // (f, d), (f, d)
  MatrixRef down;                          // (d, f)
  std::vector<float> attn_norm, ffn_norm;  // (d), widened to f32 at load
};

// Hugging Face names of every tensor of a Llama checkpoint, with shapes.
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};
std::vector<TensorSpec> llama_tensor_specs(const LlamaConfig& config);

struct ModelLoadOptions {
  // Read the weights in place from the mapped files instead of copying them.
  bool mmap = false;
  // Load weights that hold NaN or +-Inf (reported in nonfinite_report())
  // instead of refusing them: such a model computes NaN logits, so it is
  // almost always a broken export, but a user may want to look at it anyway.
  bool allow_nonfinite = false;
};

class LlamaModel {
 public:
  // Reads DIR/config.json and the weights (model.safetensors, or the shards of
  // model.safetensors.index.json), or a GGUF file (a path that is a file:
  // model/gguf_llama.h). Checks every tensor's presence, shape and dtype.
  // By default the weight matrices are copied into one anonymous buffer backed
  // by huge pages: on the virtual machines flora is measured on, decode from
  // the page cache's 4 KiB pages stalls every few steps (tg128 of the 1B shape:
  // 144 ms/token mapped against 55 copied, docs/benchmarks.md); each matrix's
  // mapped pages are given back as soon as it is copied (TensorStore::drop_pages),
  // so the process holds the weights once, not twice, even while loading. use_mmap reads
  // them in place from the mapped files instead: instant load, shared memory.
  // Every weight is scanned once for NaN and +-Inf as it is loaded (fused with
  // the copy; one pass over the mapping with mmap); the first one found fails
  // naming the file, the tensor and the element, unless allow_nonfinite.
  static std::unique_ptr<LlamaModel> load(const std::string& dir, const ModelLoadOptions& options);
  static std::unique_ptr<LlamaModel> load(const std::string& dir, bool use_mmap = false) {
    return load(dir, ModelLoadOptions{use_mmap, false});
  }

  // With allow_nonfinite: one line naming the first tensor with a NaN or Inf
  // and how many tensors have any; empty when every weight is finite.
  const std::string& nonfinite_report() const { return nonfinite_report_; }

  const std::string& dir() const { return dir_; }
  const LlamaConfig& config() const { return config_; }
  const MatrixRef& embed() const { return embed_; }                     // (V, d)
  const MatrixRef& lm_head() const { return lm_head_; }                 // (V, d); the embedding when tied
  const std::vector<float>& final_norm() const { return final_norm_; }  // (d)
  const std::vector<LayerWeights>& layers() const { return layers_; }
  // Bytes of weights one decode step reads: every layer matrix and the LM head.
  size_t decode_weight_bytes() const;
  size_t weight_bytes() const { return store_->total_bytes(); }

 private:
  // qk_head_dim: the rows are q's or k's, which a GGUF holds in llama.cpp's
  // order (model/gguf_llama.h): put back in Hugging Face's as they are read.
  MatrixRef matrix(const std::string& name, int64_t rows, int64_t cols, int64_t qk_head_dim = 0);
  std::vector<float> vector_f32(const std::string& name, int64_t n);
  // Records (or, unless allowed, refuses) element k of t, the first non-finite one.
  void nonfinite_found(const TensorView& t, int64_t k);

  std::string dir_;
  LlamaConfig config_;
  std::unique_ptr<TensorStore> store_;
  std::vector<std::vector<uint8_t>> aligned_copies_;  // tensors whose file offset was misaligned
  AnonymousBuffer arena_;                             // all matrices, when not reading them in place
  size_t arena_used_ = 0;
  MatrixRef embed_, lm_head_;
  std::vector<float> final_norm_;
  std::vector<LayerWeights> layers_;
  bool allow_nonfinite_ = false;
  int64_t nonfinite_tensors_ = 0;
  std::string first_nonfinite_;  // "FILE: tensor 'NAME': element K is NaN"
  std::string nonfinite_report_;
};

// The weights a pass reads, as views in their stored formats: a loaded
// model's, a merged LoRA's layers over it, or the f32 masters of full
// fine-tuning (model/dense_weights.h). Not owning.
struct LayerView {
  MatrixRef q, k, v, o, gate, up, down;  // as LayerWeights
  const float* attn_norm = nullptr;      // (d)
  const float* ffn_norm = nullptr;       // (d)
};
struct WeightsView {
  MatrixRef embed;    // (V, d)
  MatrixRef lm_head;  // (V, d); the same data as embed when tied
  bool tied = false;
  const float* final_norm = nullptr;  // (d)
  std::vector<LayerView> layers;
};
// The model's weights; layers (optional) replace its layer weights (a merged LoRA).
WeightsView weights_view_of(const LlamaModel& model, const std::vector<LayerWeights>* layers = nullptr);

// Row `id` of the embedding, widened to f32. out: (d)
void embedding_row(const MatrixRef& embed, int64_t id, float* out);

}  // namespace flora
