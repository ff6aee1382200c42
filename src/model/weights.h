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

class LlamaModel {
 public:
  // Reads DIR/config.json and the weights (model.safetensors, or the shards of
  // model.safetensors.index.json). Checks every tensor's presence, shape and dtype.
  // By default the weight matrices are copied into one anonymous buffer backed
  // by huge pages: on the virtual machines flora is measured on, decode from
  // the page cache's 4 KiB pages stalls every few steps (tg128 of the 1B shape:
  // 144 ms/token mapped against 55 copied, docs/benchmarks.md). use_mmap reads
  // them in place from the mapped files instead: instant load, shared memory.
  static std::unique_ptr<LlamaModel> load(const std::string& dir, bool use_mmap = false);

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
  MatrixRef matrix(const std::string& name, int64_t rows, int64_t cols);
  std::vector<float> vector_f32(const std::string& name, int64_t n) const;

  std::string dir_;
  LlamaConfig config_;
  std::unique_ptr<TensorStore> store_;
  std::vector<std::vector<uint8_t>> aligned_copies_;  // tensors whose file offset was misaligned
  AnonymousBuffer arena_;                             // all matrices, when not reading them in place
  size_t arena_used_ = 0;
  MatrixRef embed_, lm_head_;
  std::vector<float> final_norm_;
  std::vector<LayerWeights> layers_;
};

// Row `id` of the embedding, widened to f32. out: (d)
void embedding_row(const MatrixRef& embed, int64_t id, float* out);

}  // namespace flora
