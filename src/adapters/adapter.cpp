#include "adapters/adapter.h"

#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include "adapters/gguf_lora.h"
#include "io/safetensors.h"
#include "io/tensor_store.h"
#include "model/gguf_llama.h"
#include "ops/quant.h"
#include "util/error.h"
#include "util/file.h"
#include "util/random.h"

namespace flora {

namespace {

// Uniform on [-bound, bound], depending only on (seed, name).
void fill_uniform(AdapterMatrix& m, double bound, uint64_t seed, const std::string& name) {
  uint64_t state = seed ^ fnv1a(name);
  for (float& v : m.data) {
    const double u = uniform01(state);
    v = static_cast<float>((2.0 * u - 1.0) * bound);
  }
}

AdapterMatrix zeros(int64_t rows, int64_t cols) {
  AdapterMatrix m;
  m.rows = rows, m.cols = cols;
  m.data.assign(static_cast<size_t>(rows * cols), 0.0f);
  return m;
}

// One matrix the configuration asks for: where it lives and its shape.
struct Slot {
  int64_t layer;
  Target target;
  char which;  // 'A', 'B', 'C'
  int64_t rows, cols;
};

std::vector<Slot> slots(const AdapterConfig& c, const LlamaConfig& model) {
  std::vector<Slot> out;
  const int64_t r = c.rank;
  for (int64_t l = 0; l < model.num_hidden_layers; ++l)
    for (Target t : kAllTargets) {
      const int i = static_cast<int>(t);
      const int64_t in = target_in(model, t), o = target_out(model, t);
      if (c.forward[i]) out.push_back({l, t, 'A', r, in});
      const bool has_b = c.family == AdapterFamily::LoRA ? c.forward[i] : c.backward[i];
      if (has_b) out.push_back({l, t, 'B', o, r});
      if (c.family == AdapterFamily::FLoRA && c.carry[i]) out.push_back({l, t, 'C', r, r});
    }
  return out;
}

}  // namespace

AdapterMatrix& LayerAdapter::matrix(Target t, char which) {
  const int i = static_cast<int>(t);
  return which == 'A' ? A[i] : which == 'B' ? B[i] : C[i];
}
const AdapterMatrix& LayerAdapter::matrix(Target t, char which) const {
  const int i = static_cast<int>(t);
  return which == 'A' ? A[i] : which == 'B' ? B[i] : C[i];
}

Adapter Adapter::zeros_like() const {
  Adapter z = *this;
  for (LayerAdapter& la : z.layers)
    for (Target t : kAllTargets)
      for (char which : {'A', 'B', 'C'}) {
        auto& d = la.matrix(t, which).data;
        std::fill(d.begin(), d.end(), 0.0f);
      }
  return z;
}

int64_t target_in(const LlamaConfig& c, Target t) {
  switch (t) {
    case Target::Q:
    case Target::K:
    case Target::V:
    case Target::Gate:
    case Target::Up:
      return c.hidden_size;
    case Target::O:
      return c.q_dim();
    case Target::Down:
      return c.intermediate_size;
  }
  return 0;
}

int64_t target_out(const LlamaConfig& c, Target t) {
  switch (t) {
    case Target::Q:
      return c.q_dim();
    case Target::K:
    case Target::V:
      return c.kv_dim();
    case Target::O:
    case Target::Down:
      return c.hidden_size;
    case Target::Gate:
    case Target::Up:
      return c.intermediate_size;
  }
  return 0;
}

std::string Adapter::tensor_name(const AdapterConfig& config, int64_t layer, Target t, char which) {
  return fmt::format("base_model.model.model.layers.{}.{}.{}_{}.weight", layer, target_path(t),
                     config.family == AdapterFamily::LoRA ? "lora" : "flora", which);
}

void check_adapter_fits(const Adapter& adapter, const LlamaConfig& model, const std::string& model_name) {
  const AdapterConfig& c = adapter.config;
  const std::string name =
      adapter.origin.empty() ? fmt::format("adapter '{}'", c.variant) : fmt::format("adapter {}", adapter.origin);
  if (static_cast<int64_t>(adapter.layers.size()) != model.num_hidden_layers)
    fail("{}: expected {} layers, as the model {} has, found {}", name, model.num_hidden_layers, model_name,
         adapter.layers.size());
  // Expected shape of every (layer, target, matrix); {0, 0} where there is none.
  std::vector<std::array<std::array<std::array<int64_t, 2>, 3>, kTargets>> want(adapter.layers.size());
  for (const Slot& s : slots(c, model)) want[s.layer][static_cast<int>(s.target)][s.which - 'A'] = {s.rows, s.cols};
  for (size_t l = 0; l < adapter.layers.size(); ++l)
    for (Target t : kAllTargets)
      for (char which : {'A', 'B', 'C'}) {
        const AdapterMatrix& m = adapter.layers[l].matrix(t, which);
        const auto& w = want[l][static_cast<int>(t)][which - 'A'];
        const bool sized = static_cast<int64_t>(m.data.size()) == m.rows * m.cols;
        if (m.rows == w[0] && m.cols == w[1] && sized) continue;
        const std::string found = !sized
                                      ? fmt::format("{} with {} values", format_shape({m.rows, m.cols}), m.data.size())
                                  : m.empty() ? std::string("no matrix")
                                              : format_shape({m.rows, m.cols});
        fail("{}: layer {} {} {}: expected {} for the model {} (r = {}), found {}", name, l, target_module(t),
             c.family == AdapterFamily::LoRA ? fmt::format("lora_{}", which) : fmt::format("flora_{}", which),
             w[0] == 0 ? std::string("no matrix") : format_shape({w[0], w[1]}), model_name, c.rank, found);
      }
}

Adapter Adapter::create(const AdapterConfig& config, const LlamaConfig& model, uint64_t seed) {
  config.validate("adapter configuration");
  Adapter a;
  a.config = config;
  a.layers.resize(static_cast<size_t>(model.num_hidden_layers));
  for (const Slot& s : slots(config, model)) {
    AdapterMatrix& m = a.layers[s.layer].matrix(s.target, s.which);
    m = zeros(s.rows, s.cols);
    const std::string name = tensor_name(config, s.layer, s.target, s.which);
    const double fan_in = static_cast<double>(s.cols);
    switch (config.init) {
      case AdapterInit::Lora:
        // PEFT: kaiming_uniform_(A, a=sqrt(5)): bound = sqrt(6 / ((1 + 5) fan_in)) = 1 / sqrt(fan_in).
        if (s.which == 'A') fill_uniform(m, 1.0 / std::sqrt(fan_in), seed, name);
        break;
      case AdapterInit::Zero:
        break;
      case AdapterInit::Random:
        // Uniform on [-b, b] has standard deviation b / sqrt(3); we want 1 / sqrt(fan_in).
        fill_uniform(m, std::sqrt(3.0 / fan_in), seed, name);
        break;
    }
  }
  return a;
}

Adapter Adapter::load(const std::string& dir, const LlamaConfig& model) {
  if (is_gguf_path(dir)) return load_lora_gguf(dir, model);
  const std::string config_path = dir + "/adapter_config.json";
  const std::string weights_path = dir + "/adapter_model.safetensors";
  if (!file_exists(config_path))
    fail("{}: not found (an adapter directory holds adapter_config.json and adapter_model.safetensors)", config_path);
  Adapter a;
  a.origin = dir;
  a.config = AdapterConfig::from_json(read_json_file(config_path), config_path);
  if (!file_exists(weights_path))
    fail("{}: not found (an adapter directory holds adapter_config.json and adapter_model.safetensors)", weights_path);
  const SafetensorsFile file(weights_path);
  std::vector<std::string> names;
  for (const TensorView& t : file.tensors()) names.push_back(t.name);
  a.read_tensors(
      model, [&](const std::string& name) { return file.find(name); }, names, weights_path, "adapter_config.json");
  return a;
}

void Adapter::read_tensors(const LlamaConfig& model, const std::function<const TensorView*(const std::string&)>& find,
                           const std::vector<std::string>& names, const std::string& file, const std::string& asker,
                           const std::function<std::string(const std::string&)>& file_name_of) {
  layers.assign(static_cast<size_t>(model.num_hidden_layers), LayerAdapter{});
  std::set<std::string> expected;
  for (const Slot& s : slots(config, model)) {
    const std::string name = tensor_name(config, s.layer, s.target, s.which);
    expected.insert(name);
    const TensorView* t = find(name);
    if (!t)
      fail("{}: tensor '{}' is missing (expected shape {}; {} asks for it)", file,
           file_name_of ? file_name_of(name) : name, format_shape({s.rows, s.cols}), asker);
    if (t->dtype != DType::F32 && t->dtype != DType::BF16 && t->dtype != DType::F16)
      fail("{}: tensor '{}': expected dtype F32, BF16 or F16, found {}", file, t->name, dtype_name(t->dtype));
    if (t->shape != std::vector<int64_t>{s.rows, s.cols})
      fail("{}: tensor '{}': expected shape {}, found {} (r = {} from {})", file, t->name,
           format_shape({s.rows, s.cols}), format_shape(t->shape), config.rank, asker);
    // An adapter is small (a few percent of the model), and a NaN in it turns
    // every output NaN, so it is refused here with the place of the first one.
    if (const int64_t k = first_nonfinite(*t); k >= 0)
      fail("{}: tensor '{}': element {} (row {}, column {}) is {}; expected finite values", file, t->name, k,
           k / s.cols, k % s.cols, nonfinite_name(t->data, t->dtype, k));
    AdapterMatrix& m = layers[s.layer].matrix(s.target, s.which);
    m = zeros(s.rows, s.cols);
    dequantize_row(t->dtype, t->data, static_cast<int64_t>(m.data.size()), m.data.data());
  }
  for (const std::string& name : names)
    if (!expected.count(name))
      fail("{}: unexpected tensor '{}' (not asked for by {} for this model of {} layers)", file, printable(name), asker,
           model.num_hidden_layers);
}

void Adapter::save(const std::string& dir) const {
  make_directories(dir);
  std::vector<TensorToWrite> tensors;
  for (size_t l = 0; l < layers.size(); ++l)
    for (Target t : kAllTargets)
      for (char which : {'A', 'B', 'C'}) {
        const AdapterMatrix& m = layers[l].matrix(t, which);
        if (m.empty()) continue;
        tensors.push_back(
            {tensor_name(config, static_cast<int64_t>(l), t, which), DType::F32, {m.rows, m.cols}, m.data.data()});
      }
  write_safetensors(dir + "/adapter_model.safetensors", tensors, {{"format", "pt"}});
  write_file_atomic(dir + "/adapter_config.json", config.to_json().dump(2) + "\n");
}

int64_t Adapter::parameter_count() const {
  int64_t n = 0;
  for (const LayerAdapter& la : layers)
    for (int i = 0; i < kTargets; ++i)
      n += la.A[i].rows * la.A[i].cols + la.B[i].rows * la.B[i].cols + la.C[i].rows * la.C[i].cols;
  return n;
}

}  // namespace flora
