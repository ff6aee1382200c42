#include "model/dense_weights.h"

#include "io/safetensors.h"
#include "model/init.h"
#include "util/error.h"
#include "util/file.h"

namespace flora {

namespace {
std::string layer_name(int64_t l, const char* what) { return fmt::format("model.layers.{}.{}.weight", l, what); }
}  // namespace

DenseWeights DenseWeights::zeros(const LlamaConfig& config) {
  DenseWeights w;
  w.config = config;
  w.specs = llama_tensor_specs(config);
  for (const TensorSpec& s : w.specs) {
    int64_t n = 1;
    for (int64_t dim : s.shape) n *= dim;
    w.data.emplace_back(static_cast<size_t>(n), 0.0f);
  }
  return w;
}

DenseWeights DenseWeights::from_model(const LlamaModel& model) {
  DenseWeights w = zeros(model.config());
  auto widen = [&](const std::string& name, const MatrixRef& m) {
    float* out = w.find(name);
    for (int64_t r = 0; r < m.rows; ++r) embedding_row(m, r, out + r * m.cols);
  };
  auto copy = [&](const std::string& name, const std::vector<float>& v) {
    std::copy(v.begin(), v.end(), w.find(name));
  };
  widen("model.embed_tokens.weight", model.embed());
  for (size_t l = 0; l < model.layers().size(); ++l) {
    const LayerWeights& L = model.layers()[l];
    copy(layer_name(l, "input_layernorm"), L.attn_norm);
    widen(layer_name(l, "self_attn.q_proj"), L.q);
    widen(layer_name(l, "self_attn.k_proj"), L.k);
    widen(layer_name(l, "self_attn.v_proj"), L.v);
    widen(layer_name(l, "self_attn.o_proj"), L.o);
    copy(layer_name(l, "post_attention_layernorm"), L.ffn_norm);
    widen(layer_name(l, "mlp.gate_proj"), L.gate);
    widen(layer_name(l, "mlp.up_proj"), L.up);
    widen(layer_name(l, "mlp.down_proj"), L.down);
  }
  copy("model.norm.weight", model.final_norm());
  if (!model.config().tie_word_embeddings) widen("lm_head.weight", model.lm_head());
  return w;
}

const float* DenseWeights::find(const std::string& name) const {
  for (size_t i = 0; i < specs.size(); ++i)
    if (specs[i].name == name) return data[i].data();
  fail("model has no tensor '{}'", name);
}
float* DenseWeights::find(const std::string& name) {
  return const_cast<float*>(static_cast<const DenseWeights*>(this)->find(name));
}

int64_t DenseWeights::size() const {
  int64_t n = 0;
  for (const auto& v : data) n += static_cast<int64_t>(v.size());
  return n;
}

WeightsView DenseWeights::train_weights() const {
  const LlamaConfig& c = config;
  const int64_t d = c.hidden_size, f = c.intermediate_size;
  auto m = [&](const std::string& name, int64_t rows, int64_t cols) {
    return MatrixRef{find(name), DType::F32, rows, cols, 0};
  };
  WeightsView w;
  w.embed = m("model.embed_tokens.weight", c.vocab_size, d);
  w.tied = c.tie_word_embeddings;
  w.lm_head = w.tied ? w.embed : m("lm_head.weight", c.vocab_size, d);
  w.final_norm = find("model.norm.weight");
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    w.layers.push_back(LayerView{
        m(layer_name(l, "self_attn.q_proj"), c.q_dim(), d), m(layer_name(l, "self_attn.k_proj"), c.kv_dim(), d),
        m(layer_name(l, "self_attn.v_proj"), c.kv_dim(), d), m(layer_name(l, "self_attn.o_proj"), d, c.q_dim()),
        m(layer_name(l, "mlp.gate_proj"), f, d), m(layer_name(l, "mlp.up_proj"), f, d),
        m(layer_name(l, "mlp.down_proj"), d, f), find(layer_name(l, "input_layernorm")),
        find(layer_name(l, "post_attention_layernorm"))});
  return w;
}

TrainGrads DenseWeights::train_grads() {
  TrainGrads g;
  g.embed = find("model.embed_tokens.weight");
  g.lm_head = config.tie_word_embeddings ? nullptr : find("lm_head.weight");
  g.final_norm = find("model.norm.weight");
  for (int64_t l = 0; l < config.num_hidden_layers; ++l)
    g.layers.push_back(TrainLayerGrads{
        find(layer_name(l, "self_attn.q_proj")), find(layer_name(l, "self_attn.k_proj")),
        find(layer_name(l, "self_attn.v_proj")), find(layer_name(l, "self_attn.o_proj")),
        find(layer_name(l, "mlp.gate_proj")), find(layer_name(l, "mlp.up_proj")), find(layer_name(l, "mlp.down_proj")),
        find(layer_name(l, "input_layernorm")), find(layer_name(l, "post_attention_layernorm"))});
  return g;
}

void DenseWeights::save(const std::string& dir, DType dtype) const {
  if (dtype != DType::F32 && dtype != DType::BF16) fail("model can be saved as F32 or BF16, not {}", dtype_name(dtype));
  make_directories(dir);
  std::vector<std::vector<uint16_t>> rounded;
  std::vector<TensorToWrite> tensors;
  for (size_t i = 0; i < specs.size(); ++i) {
    if (dtype == DType::BF16) {
      rounded.emplace_back(data[i].size());
      for (size_t j = 0; j < data[i].size(); ++j) rounded.back()[j] = f32_to_bf16(data[i][j]);
      tensors.push_back({specs[i].name, dtype, specs[i].shape, rounded.back().data()});
    } else {
      tensors.push_back({specs[i].name, dtype, specs[i].shape, data[i].data()});
    }
  }
  LlamaConfig c = config;
  c.torch_dtype = dtype == DType::BF16 ? "bfloat16" : "float32";
  write_file_atomic(dir + "/config.json", c.to_json().dump(2) + "\n");
  write_model_safetensors(dir, tensors, kDefaultMaxShardBytes);
}

}  // namespace flora
