#include "model/weights.h"

#include <algorithm>
#include <cstring>

#include "model/gguf_llama.h"
#include "ops/formats.h"
#include "ops/quant.h"
#include "util/error.h"

namespace flora {

std::vector<TensorSpec> llama_tensor_specs(const LlamaConfig& c) {
  const int64_t d = c.hidden_size, f = c.intermediate_size;
  std::vector<TensorSpec> specs;
  specs.push_back({"model.embed_tokens.weight", {c.vocab_size, d}});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    specs.push_back({p + "input_layernorm.weight", {d}});
    specs.push_back({p + "self_attn.q_proj.weight", {c.q_dim(), d}});
    specs.push_back({p + "self_attn.k_proj.weight", {c.kv_dim(), d}});
    specs.push_back({p + "self_attn.v_proj.weight", {c.kv_dim(), d}});
    specs.push_back({p + "self_attn.o_proj.weight", {d, c.q_dim()}});
    specs.push_back({p + "post_attention_layernorm.weight", {d}});
    specs.push_back({p + "mlp.gate_proj.weight", {f, d}});
    specs.push_back({p + "mlp.up_proj.weight", {f, d}});
    specs.push_back({p + "mlp.down_proj.weight", {d, f}});
  }
  specs.push_back({"model.norm.weight", {d}});
  if (!c.tie_word_embeddings) specs.push_back({"lm_head.weight", {c.vocab_size, d}});
  return specs;
}

void LlamaModel::nonfinite_found(const TensorView& t, int64_t k) {
  const std::string what =
      fmt::format("{}: tensor '{}': element {} is {}", t.file, t.name, k, nonfinite_name(t.data, t.dtype, k));
  if (!allow_nonfinite_)
    fail(
        "{} (expected finite weights: NaN or Inf in a weight makes the logits NaN, so the checkpoint is likely "
        "broken; generate, logits, bench and eval load it anyway with --allow-nonfinite)",
        what);
  if (nonfinite_tensors_++ == 0) first_nonfinite_ = what;
}

MatrixRef LlamaModel::matrix(const std::string& name, int64_t rows, int64_t cols, int64_t qk_head_dim) {
  const TensorView& t = store_->get(name, {rows, cols});
  // Any format a matrix kernel reads (ops/formats.h); a block format only from
  // a GGUF, whose reader checked that rows are whole blocks.
  const WeightFormat* format = find_weight_format(t.dtype);
  if (!format)
    fail("{}: tensor '{}': expected dtype {}, found {}", t.file, name, weight_format_names(), dtype_name(t.dtype));
  const void* data = t.data;
  if (store_->gguf() && qk_head_dim > 0) {
    // Rows back in Hugging Face's order: a copy, row by row, into the arena
    // or (reading in place) a buffer of its own.
    const size_t row_bytes = t.nbytes / static_cast<size_t>(rows);
    uint8_t* dst = nullptr;
    if (arena_.data()) {
      FLORA_ASSERT(arena_used_ + t.nbytes <= arena_.size());
      dst = arena_.data() + arena_used_;
      arena_used_ += (t.nbytes + 63) & ~size_t{63};
    } else {
      dst = aligned_copies_.emplace_back(t.nbytes).data();
    }
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(dst + static_cast<size_t>(r) * row_bytes,
                  t.data + static_cast<size_t>(gguf_row_of_hf_row(r, qk_head_dim)) * row_bytes, row_bytes);
    if (const int64_t k = first_nonfinite(t); k >= 0) nonfinite_found(t, k);
    if (arena_.data()) store_->drop_pages(t);  // copied: see below
    return MatrixRef{dst, t.dtype, rows, cols, 0};
  }
  if (arena_.data()) {  // copy into the huge-page arena, 64-byte aligned
    FLORA_ASSERT(arena_used_ + t.nbytes <= arena_.size());
    uint8_t* dst = arena_.data() + arena_used_;
    // The scan reads each piece just copied while it is still in L1/L2, so
    // checking costs no second trip to memory.
    const auto block_bytes = static_cast<size_t>(format->block_bytes);
    const size_t piece = (size_t{32} << 10) / block_bytes * block_bytes;  // bytes, whole blocks
    bool bad = false;
    for (size_t at = 0; at < t.nbytes; at += piece) {
      const size_t len = std::min(piece, t.nbytes - at);
      std::memcpy(dst + at, t.data + at, len);
      const auto elems = static_cast<int64_t>(len / block_bytes) * format->block_elems;
      if (first_nonfinite(dst + at, t.dtype, elems) >= 0) [[unlikely]]
        bad = true;
    }
    if (bad) nonfinite_found(t, first_nonfinite(t));
    // The mapping's pages of a copied matrix go back at once, not after the
    // whole load: otherwise the load holds the model twice at its end (4.7 GB
    // for Llama-3.2-1B in BF16, the peak of a LoRA run at 512 tokens).
    store_->drop_pages(t);
    data = dst;
    arena_used_ += (t.nbytes + 63) & ~size_t{63};
    return MatrixRef{data, t.dtype, rows, cols, 0};
  }
  if (const int64_t k = first_nonfinite(t); k >= 0) nonfinite_found(t, k);
  // safetensors does not promise alignment; kernels load unaligned, but a
  // scalar float read through a misaligned pointer is undefined behaviour.
  // (Block formats are read byte-wise and with memcpy: any address will do.)
  if (!is_quantized(t.dtype) && reinterpret_cast<uintptr_t>(data) % dtype_size(t.dtype) != 0) {
    aligned_copies_.emplace_back(t.data, t.data + t.nbytes);
    data = aligned_copies_.back().data();
  }
  return MatrixRef{data, t.dtype, rows, cols, 0};
}

std::vector<float> LlamaModel::vector_f32(const std::string& name, int64_t n) {
  const TensorView& t = store_->get(name, {n});
  if (const int64_t k = first_nonfinite(t); k >= 0) nonfinite_found(t, k);
  std::vector<float> out(n);
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* p = t.data + i * dtype_size(t.dtype);
    uint16_t h;
    switch (t.dtype) {
      case DType::F32:
        std::memcpy(&out[i], p, 4);
        break;
      case DType::BF16:
        std::memcpy(&h, p, 2);
        out[i] = bf16_to_f32(h);
        break;
      case DType::F16:
        std::memcpy(&h, p, 2);
        out[i] = f16_to_f32(h);
        break;
      default:
        fail("{}: tensor '{}': expected dtype BF16, F16 or F32, found {}", t.file, name, dtype_name(t.dtype));
    }
  }
  return out;
}

std::unique_ptr<LlamaModel> LlamaModel::load(const std::string& dir, const ModelLoadOptions& options) {
  const bool use_mmap = options.mmap;
  auto m = std::unique_ptr<LlamaModel>(new LlamaModel());
  m->dir_ = dir;
  m->allow_nonfinite_ = options.allow_nonfinite;
  const bool gguf = is_gguf_path(dir);
  if (gguf) {
    m->store_ = std::make_unique<TensorStore>(dir, hf_tensor_name);
    m->config_ = llama_config_from_gguf(*m->store_->gguf());
  } else {
    m->config_ = LlamaConfig::from_file(dir + "/config.json");
    m->store_ = std::make_unique<TensorStore>(dir);
  }
  const LlamaConfig& c = m->config_;
  const int64_t d = c.hidden_size, f = c.intermediate_size;

  // Every tensor of the list must be present with its shape; tensors the list
  // does not know (rotary caches some exporters add) are ignored.
  size_t matrix_bytes = 0;
  for (const auto& spec : llama_tensor_specs(c)) {
    if (gguf && !m->store_->find(spec.name))
      fail("{}: tensor '{}' not found (flora reads it as {})", dir, gguf_tensor_name(spec.name), spec.name);
    const TensorView& t = m->store_->get(spec.name, spec.shape);
    if (spec.shape.size() == 2) matrix_bytes += (t.nbytes + 63) & ~size_t{63};
  }
  if (!use_mmap) m->arena_ = AnonymousBuffer(matrix_bytes, /*huge_pages=*/true);

  m->embed_ = m->matrix("model.embed_tokens.weight", c.vocab_size, d);
  m->lm_head_ = c.tie_word_embeddings ? m->embed_ : m->matrix("lm_head.weight", c.vocab_size, d);
  m->final_norm_ = m->vector_f32("model.norm.weight", d);
  m->layers_.resize(c.num_hidden_layers);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    LayerWeights& w = m->layers_[l];
    w.attn_norm = m->vector_f32(p + "input_layernorm.weight", d);
    w.ffn_norm = m->vector_f32(p + "post_attention_layernorm.weight", d);
    w.q = m->matrix(p + "self_attn.q_proj.weight", c.q_dim(), d, c.head_dim);
    w.k = m->matrix(p + "self_attn.k_proj.weight", c.kv_dim(), d, c.head_dim);
    w.v = m->matrix(p + "self_attn.v_proj.weight", c.kv_dim(), d);
    w.o = m->matrix(p + "self_attn.o_proj.weight", d, c.q_dim());
    w.gate = m->matrix(p + "mlp.gate_proj.weight", f, d);
    w.up = m->matrix(p + "mlp.up_proj.weight", f, d);
    w.down = m->matrix(p + "mlp.down_proj.weight", d, f);
  }
  // Every matrix is in the arena now and the norms are widened copies: the
  // mapping's pages (as many bytes again as the model) need not stay resident.
  if (!use_mmap) m->store_->drop_pages();
  if (m->nonfinite_tensors_ > 0)
    m->nonfinite_report_ = fmt::format("{}; {} of the model's tensors hold NaN or Inf (loaded: --allow-nonfinite)",
                                       m->first_nonfinite_, m->nonfinite_tensors_);
  return m;
}

size_t LlamaModel::decode_weight_bytes() const {
  // Through the format table: a block format's bytes include its scales.
  auto bytes = [](const MatrixRef& m) { return static_cast<size_t>(m.rows) * quantized_bytes(m.dtype, m.cols); };
  size_t total = bytes(lm_head_);
  for (const auto& w : layers_)
    total += bytes(w.q) + bytes(w.k) + bytes(w.v) + bytes(w.o) + bytes(w.gate) + bytes(w.up) + bytes(w.down);
  return total;
}

void embedding_row(const MatrixRef& embed, int64_t id, float* out) {
  // The row's bytes through the format table, widened as the kernels widen them
  // (dequantize_row: exact for BF16 and F16, ggml's values for the block formats).
  dequantize_row(embed.dtype, static_cast<const uint8_t*>(embed.data) + id * embed.row_bytes(), embed.cols, out);
}

WeightsView weights_view_of(const LlamaModel& model, const std::vector<LayerWeights>* layers) {
  WeightsView w;
  w.embed = model.embed();
  w.lm_head = model.lm_head();
  w.tied = model.config().tie_word_embeddings;
  w.final_norm = model.final_norm().data();
  for (const LayerWeights& l : layers ? *layers : model.layers())
    w.layers.push_back(LayerView{l.q, l.k, l.v, l.o, l.gate, l.up, l.down, l.attn_norm.data(), l.ffn_norm.data()});
  return w;
}

}  // namespace flora
