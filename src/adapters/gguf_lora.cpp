#include "adapters/gguf_lora.h"

#include <cmath>
#include <set>

#include "io/tensor_store.h"
#include "model/gguf_llama.h"
#include "util/error.h"

namespace flora {

namespace {

constexpr std::string_view kLoraA = ".lora_a", kLoraB = ".lora_b";

// "model.layers.N.self_attn.q_proj.weight": the model tensor a target of a layer adapts.
std::string model_tensor(int64_t layer, Target t) {
  return fmt::format("model.layers.{}.{}.weight", layer, target_path(t));
}

// The PEFT name of a GGUF LoRA tensor ("blk.3.attn_q.weight.lora_a" ->
// "base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight"); nullopt for any other name.
std::optional<std::string> peft_name_of(std::string_view name) {
  for (const auto& [suffix, which] : {std::pair{kLoraA, "A"}, std::pair{kLoraB, "B"}}) {
    if (name.size() <= suffix.size() || name.substr(name.size() - suffix.size()) != suffix) continue;
    const auto hf = hf_tensor_name(name.substr(0, name.size() - suffix.size()));
    constexpr std::string_view kLayers = "model.layers.", kWeight = ".weight";
    if (!hf || hf->rfind(kLayers, 0) != 0) return std::nullopt;
    return fmt::format("base_model.model.{}.lora_{}.weight", hf->substr(0, hf->size() - kWeight.size()), which);
  }
  return std::nullopt;
}

bool is_qk(Target t) { return t == Target::Q || t == Target::K; }

}  // namespace

void export_lora_gguf(const Adapter& adapter, const LlamaConfig& model, const std::string& out_path) {
  const AdapterConfig& c = adapter.config;
  const std::string name = adapter.origin.empty() ? c.variant : adapter.origin;
  if (c.family != AdapterFamily::LoRA)
    fail(
        "{}: a {} adapter (FLoRA) has no llama.cpp format: llama.cpp runs a LoRA as separate products added to "
        "one projection, while FLoRA's backward adapter reads the summed forward adapters of a whole sub-block",
        name, c.variant);
  check_adapter_fits(adapter, model, "given");
  // llama.cpp scales by alpha / r; rsLoRA's alpha / sqrt(r) is that with alpha' = alpha sqrt(r).
  const double alpha = c.use_rslora ? c.alpha * std::sqrt(static_cast<double>(c.rank)) : c.alpha;
  std::vector<std::pair<std::string, GgufValue>> kv = {
      {"general.architecture", GgufValue::string("llama")},
      {"general.type", GgufValue::string("adapter")},
      {"adapter.type", GgufValue::string("lora")},
      {"adapter.lora.alpha", GgufValue::f32(static_cast<float>(alpha))},
  };
  std::vector<std::vector<float>> permuted;  // B of q and k in llama.cpp's row order
  permuted.reserve(2 * adapter.layers.size());
  std::vector<GgufTensorToWrite> tensors;
  for (size_t l = 0; l < adapter.layers.size(); ++l)
    for (Target t : kAllTargets) {
      if (!c.forward[static_cast<int>(t)]) continue;
      const AdapterMatrix& A = adapter.layers[l].A[static_cast<int>(t)];
      const AdapterMatrix& B = adapter.layers[l].B[static_cast<int>(t)];
      const std::string base = gguf_tensor_name(model_tensor(static_cast<int64_t>(l), t));
      tensors.push_back(
          {base + std::string(kLoraA), static_cast<uint32_t>(GgmlType::F32), {A.cols, A.rows}, A.data.data()});
      const float* b = B.data.data();
      if (is_qk(t)) {
        std::vector<float>& p = permuted.emplace_back(B.data.size());
        for (int64_t g = 0; g < B.rows; ++g) {
          const int64_t r = hf_row_of_gguf_row(g, model.head_dim);
          std::copy(B.data.begin() + r * B.cols, B.data.begin() + (r + 1) * B.cols, p.begin() + g * B.cols);
        }
        b = p.data();
      }
      tensors.push_back({base + std::string(kLoraB), static_cast<uint32_t>(GgmlType::F32), {B.cols, B.rows}, b});
    }
  write_gguf(out_path, kv, tensors);
}

Adapter load_lora_gguf(const std::string& path, const LlamaConfig& model) {
  const TensorStore store(path, peft_name_of);
  const GgufFile& f = *store.gguf();
  auto expect = [&](const char* key, const char* want, const char* why) {
    const auto v = f.get_string(key);
    if (v != want)
      fail("{}: {} is {}: expected '{}' ({})", path, key, v ? "'" + *v + "'" : std::string("missing"), want, why);
  };
  expect("general.type", "adapter", "a model file is not an adapter");
  expect("adapter.type", "lora", "flora reads llama.cpp's LoRA adapters");
  expect("general.architecture", "llama", "an adapter of a Llama model");
  for (const auto& [key, value] : f.metadata())
    if (key.rfind("adapter.alora.", 0) == 0)
      fail("{}: {}: activated LoRA (invocation tokens) is not supported", path, key);

  // Targets and rank from layer 0; read_tensors then holds every layer to them.
  std::array<bool, kTargets> targets{};
  int64_t rank = 0;
  for (Target t : kAllTargets) {
    const std::string a = gguf_tensor_name(model_tensor(0, t)) + std::string(kLoraA);
    const GgufTensor* ta = f.find_tensor(a);
    if (!ta) continue;
    targets[static_cast<int>(t)] = true;
    if (ta->ne.size() != 2) fail("{}: tensor '{}': expected 2 dimensions [in, r], found {}", path, a, ta->ne.size());
    if (rank == 0) rank = ta->ne[1];
    if (ta->ne[1] != rank)
      fail("{}: tensor '{}' has rank {}, other targets {}: flora's adapters have one rank", path, a, ta->ne[1], rank);
  }
  if (rank == 0)
    fail("{}: no lora_a tensor for layer 0 (blk.0.<target>.weight.lora_a): not a LoRA of this model", path);
  double alpha = f.get_float("adapter.lora.alpha").value_or(0.0);
  if (alpha == 0) alpha = static_cast<double>(rank);  // llama.cpp: no alpha, scale 1
  Adapter a;
  a.origin = path;
  a.config = AdapterConfig::preset("lora", rank, alpha, targets);
  std::vector<std::string> names = store.names();
  for (const GgufTensor& t : f.tensors())
    if (!peft_name_of(t.name)) names.push_back(t.name);  // none may be there
  a.read_tensors(
      model, [&](const std::string& name) { return store.find(name); }, names, path,
      "the tensors of layer 0 (targets and rank)",
      [&](const std::string& peft) {
        // "base_model.model.model.layers.N.<path>.lora_X.weight" -> "blk.N.<target>.weight.lora_x"
        const size_t at = peft.rfind(".lora_");
        const std::string hf =
            peft.substr(std::string("base_model.model.").size(), at - std::string("base_model.model.").size()) +
            ".weight";
        return gguf_tensor_name(hf) + (peft[at + 6] == 'A' ? std::string(kLoraA) : std::string(kLoraB));
      });
  // B of q and k back in Hugging Face's row order.
  for (LayerAdapter& la : a.layers)
    for (Target t : {Target::Q, Target::K}) {
      AdapterMatrix& B = la.B[static_cast<int>(t)];
      if (B.empty()) continue;
      std::vector<float> hf(B.data.size());
      for (int64_t r = 0; r < B.rows; ++r) {
        const int64_t g = gguf_row_of_hf_row(r, model.head_dim);
        std::copy(B.data.begin() + g * B.cols, B.data.begin() + (g + 1) * B.cols, hf.begin() + r * B.cols);
      }
      B.data = std::move(hf);
    }
  return a;
}

}  // namespace flora
