#include "adapters/config.h"

#include <cmath>
#include <sstream>
#include <vector>

#include "util/error.h"

namespace flora {

namespace {

constexpr const char* kModules[kTargets] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                            "gate_proj", "up_proj", "down_proj"};
constexpr const char* kPaths[kTargets] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                          "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                          "mlp.down_proj"};
constexpr const char* kVariants = "lora, pf-lora, lora-merged, ffa, ffba, ffba-aorb, ffba-qg, ffba-relu";

using Mask = std::array<bool, kTargets>;

Mask mask_of(std::initializer_list<Target> ts) {
  Mask m{};
  for (Target t : ts) m[static_cast<int>(t)] = true;
  return m;
}

bool any(const Mask& m) {
  for (bool b : m)
    if (b) return true;
  return false;
}

Json modules_json(const Mask& m) {
  Json a = Json::array();
  for (int i = 0; i < kTargets; ++i)
    if (m[i]) a.push_back(kModules[i]);
  return a;
}

// A list of module names (PEFT spelling; the short --targets spelling is accepted too).
Mask modules_from_json(const Json& j, const char* key, const std::string& origin, bool required) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) fail("{}: missing key '{}'", origin, key);
    return Mask{};
  }
  if (it->is_string())
    fail("{}: key '{}': a regular expression ({}) is not supported; list the modules, e.g. [\"q_proj\", \"v_proj\"]",
         origin, key, it->dump());
  if (!it->is_array()) fail("{}: key '{}': expected a list of module names, found {}", origin, key, it->dump());
  Mask m{};
  for (const Json& e : *it) {
    if (!e.is_string()) fail("{}: key '{}': expected module names, found {}", origin, key, e.dump());
    const std::string name = e.get<std::string>();
    bool found = false;
    for (int i = 0; i < kTargets; ++i)
      if (name == kModules[i] || name == target_short_name(static_cast<Target>(i))) m[i] = found = true;
    if (!found)
      fail("{}: key '{}': unknown module '{}' (known: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)",
           origin, key, name);
  }
  return m;
}

bool is_empty_pattern(const Json& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() || (it->is_object() && it->empty());
}

// 16 rather than 16.0, as PEFT writes integral alphas.
Json number_json(double v) {
  if (std::floor(v) == v && std::fabs(v) < 1e15) return Json(static_cast<int64_t>(v));
  return Json(v);
}

const char* init_name(AdapterInit i) {
  switch (i) {
    case AdapterInit::Lora:
      return "lora";
    case AdapterInit::Zero:
      return "zero";
    case AdapterInit::Random:
      return "random";
  }
  return "?";
}

}  // namespace

const char* target_module(Target t) { return kModules[static_cast<int>(t)]; }
const char* target_path(Target t) { return kPaths[static_cast<int>(t)]; }

const char* lora_variant_name(LoraExecution e) {
  switch (e) {
    case LoraExecution::PartiallyFused:
      return "pf-lora";
    case LoraExecution::Merged:
      return "lora-merged";
    case LoraExecution::Unfused:
      break;
  }
  return "lora";
}

std::optional<LoraExecution> lora_execution_of(std::string_view variant) {
  for (LoraExecution e : {LoraExecution::Unfused, LoraExecution::PartiallyFused, LoraExecution::Merged})
    if (variant == lora_variant_name(e)) return e;
  return std::nullopt;
}

const char* nonlinearity_name(Nonlinearity n) {
  switch (n) {
    case Nonlinearity::Identity:
      return "identity";
    case Nonlinearity::ReLU:
      return "relu";
    case Nonlinearity::GELU:
      return "gelu";
    case Nonlinearity::SiLU:
      return "silu";
  }
  return "?";
}

double AdapterConfig::scale() const {
  return use_rslora ? alpha / std::sqrt(static_cast<double>(rank)) : alpha / static_cast<double>(rank);
}

AdapterConfig AdapterConfig::preset(const std::string& variant, int64_t rank, double alpha,
                                    const std::array<bool, kTargets>& lora_targets) {
  if (rank < 1) fail("adapter variant '{}': rank must be at least 1, found {}", variant, rank);
  AdapterConfig c;
  c.variant = variant;
  c.rank = rank;
  c.alpha = alpha;
  c.init = AdapterInit::Lora;
  if (const auto execution = lora_execution_of(variant)) {
    if (!any(lora_targets)) fail("adapter variant '{}': no target projections", variant);
    c.family = AdapterFamily::LoRA;
    c.lora_execution = *execution;
    c.forward = lora_targets;
    return c;
  }
  using T = Target;
  const Mask all = mask_of({T::Q, T::K, T::V, T::O, T::Gate, T::Up, T::Down});
  const Mask entries = mask_of({T::Q, T::K, T::V, T::Gate, T::Up});
  const Mask exits = mask_of({T::O, T::Down});
  c.family = AdapterFamily::FLoRA;
  if (variant == "ffa") {
    c.rank = 2 * rank;
    c.forward = all;
    c.repeat_add = all;
  } else if (variant == "ffba" || variant == "ffba-qg" || variant == "ffba-relu") {
    c.forward = all;
    c.repeat_add = variant == "ffba-qg" ? mask_of({T::Q, T::Gate}) : entries;
    c.backward = exits;
    c.carry = exits;
    if (variant == "ffba-relu") c.nonlinearity = Nonlinearity::ReLU;
  } else if (variant == "ffba-aorb") {
    c.forward = entries;
    c.repeat_add = entries;
    c.backward = exits;
  } else {
    fail("unknown adapter variant '{}': expected one of {}", variant, kVariants);
  }
  return c;
}

void AdapterConfig::validate(const std::string& origin) const {
  if (rank < 1) fail("{}: 'r': the rank must be at least 1, found {}", origin, rank);
  if (!(alpha > 0) || !std::isfinite(alpha))
    fail("{}: 'lora_alpha': must be a positive number, found {}", origin, alpha);
  if (family == AdapterFamily::LoRA) {
    if (!any(forward)) fail("{}: 'target_modules': a LoRA adapter needs at least one target module", origin);
    if (any(repeat_add) || any(backward) || any(carry))
      fail("{}: a LoRA adapter has no repeat_add, backward or carry modules (those are FLoRA's)", origin);
    return;
  }
  if (!any(forward) && !any(backward))
    fail("{}: 'target_modules'/'backward_modules': the adapter has no matrices (both lists are empty)", origin);
  for (Target t : kAllTargets) {
    const int i = static_cast<int>(t);
    const char* m = target_module(t);
    if (repeat_add[i] && !forward[i])
      fail("{}: 'repeat_add': {} has repeat-and-add but no forward adapter (add it to 'target_modules')", origin, m);
    if (!is_exit(t) && backward[i])
      fail("{}: 'backward_modules': {} is not an exit projection (backward adapters are only on o_proj, down_proj)",
           origin, m);
    if (!is_exit(t) && carry[i])
      fail("{}: 'carry_modules': {} is not an exit projection (carries are only on o_proj, down_proj)", origin, m);
    if (carry[i] && !forward[i])
      fail("{}: 'carry_modules': the carry of {} needs its forward adapter A (add {} to 'target_modules')", origin, m,
           m);
    if (carry[i] && !backward[i])
      fail("{}: 'carry_modules': the carry of {} needs its backward adapter B (add {} to 'backward_modules')", origin,
           m, m);
  }
  // A forward adapter must reach the output somewhere: by repeat-and-add, or
  // through the sub-block's sum into the exit's backward adapter or carry.
  // (A backward adapter without any forward entry adapter in its sub-block is
  // allowed: it then consumes only the carry from the previous sub-block.)
  for (Target t : kAllTargets) {
    const int i = static_cast<int>(t);
    if (!forward[i] || repeat_add[i]) continue;
    const Target exit = is_exit(t) ? t : (i < static_cast<int>(Target::O) ? Target::O : Target::Down);
    const int e = static_cast<int>(exit);
    const bool used = is_exit(t) ? carry[i] : (backward[e] || carry[e]);
    if (!used)
      fail("{}: 'target_modules': the forward adapter on {} has no effect (no repeat_add, and {} has no {})", origin,
           target_module(t), target_module(exit), is_exit(t) ? "carry" : "backward adapter or carry");
  }
}

Json AdapterConfig::to_json() const {
  Json j;
  if (family == AdapterFamily::LoRA) {
    j["peft_type"] = "LORA";
    j["task_type"] = "CAUSAL_LM";
    j["r"] = rank;
    j["lora_alpha"] = number_json(alpha);
    j["use_rslora"] = use_rslora;
    j["target_modules"] = modules_json(forward);
    j["lora_dropout"] = 0.0;
    j["bias"] = "none";
    j["fan_in_fan_out"] = false;
    j["rank_pattern"] = Json::object();
    j["alpha_pattern"] = Json::object();
    j["inference_mode"] = true;
    j["base_model_name_or_path"] = "";
    return j;
  }
  j["peft_type"] = "FLORA";
  j["task_type"] = "CAUSAL_LM";
  j["flora_variant"] = variant;
  j["r"] = rank;
  j["lora_alpha"] = number_json(alpha);
  j["use_rslora"] = use_rslora;
  j["target_modules"] = modules_json(forward);
  j["repeat_add"] = modules_json(repeat_add);
  j["backward_modules"] = modules_json(backward);
  j["carry_modules"] = modules_json(carry);
  j["nonlinearity"] = nonlinearity_name(nonlinearity);
  j["init"] = init_name(init);
  j["base_model_name_or_path"] = "";
  return j;
}

AdapterConfig AdapterConfig::from_json(const Json& j, const std::string& origin) {
  if (!j.is_object()) fail("{}: expected a JSON object", origin);
  const std::string peft_type = json_get<std::string>(j, "peft_type", origin);
  AdapterConfig c;
  if (j.contains("r") && !j["r"].is_number_integer())
    fail("{}: key 'r': expected an integer, found {}", origin, j["r"].dump());
  c.rank = json_get<int64_t>(j, "r", origin);
  if (!j.contains("lora_alpha") || !j["lora_alpha"].is_number())
    fail("{}: key 'lora_alpha': expected a number, found {}", origin,
         j.contains("lora_alpha") ? j["lora_alpha"].dump() : "nothing");
  c.alpha = j["lora_alpha"].get<double>();
  c.use_rslora = json_get_or<bool>(j, "use_rslora", false, origin);
  if (peft_type == "LORA") {
    c.variant = "lora";
    c.family = AdapterFamily::LoRA;
    c.lora_execution = LoraExecution::Unfused;
    c.init = AdapterInit::Lora;
    c.forward = modules_from_json(j, "target_modules", origin, true);
    for (const char* key : {"rank_pattern", "alpha_pattern"})
      if (!is_empty_pattern(j, key))
        fail("{}: key '{}': per-module ranks or alphas are not supported yet (found {})", origin, key, j[key].dump());
    if (json_get_or<bool>(j, "fan_in_fan_out", false, origin))
      fail("{}: key 'fan_in_fan_out': true is not supported (Llama's projections are stored (out, in))", origin);
    if (const std::string bias = json_get_or<std::string>(j, "bias", "none", origin); bias != "none")
      fail("{}: key 'bias': only \"none\" is supported, found \"{}\"", origin, bias);
    if (json_get_or<bool>(j, "use_dora", false, origin)) fail("{}: key 'use_dora': DoRA is not supported", origin);
    if (auto it = j.find("layers_to_transform"); it != j.end() && !it->is_null())
      fail("{}: key 'layers_to_transform': not supported yet (found {})", origin, it->dump());
    if (auto it = j.find("modules_to_save"); it != j.end() && !it->is_null() && !(it->is_array() && it->empty()))
      fail("{}: key 'modules_to_save': not supported (found {})", origin, it->dump());
  } else if (peft_type == "FLORA") {
    c.family = AdapterFamily::FLoRA;
    c.variant = json_get_or<std::string>(j, "flora_variant", "custom", origin);
    c.forward = modules_from_json(j, "target_modules", origin, true);
    c.repeat_add = modules_from_json(j, "repeat_add", origin, false);
    c.backward = modules_from_json(j, "backward_modules", origin, false);
    c.carry = modules_from_json(j, "carry_modules", origin, false);
    const std::string nl = json_get_or<std::string>(j, "nonlinearity", "identity", origin);
    if (nl == "identity")
      c.nonlinearity = Nonlinearity::Identity;
    else if (nl == "relu")
      c.nonlinearity = Nonlinearity::ReLU;
    else if (nl == "gelu")
      c.nonlinearity = Nonlinearity::GELU;
    else if (nl == "silu")
      c.nonlinearity = Nonlinearity::SiLU;
    else
      fail("{}: key 'nonlinearity': expected identity, relu, gelu or silu, found \"{}\"", origin, nl);
    const std::string init = json_get_or<std::string>(j, "init", "lora", origin);
    if (init == "lora")
      c.init = AdapterInit::Lora;
    else if (init == "zero")
      c.init = AdapterInit::Zero;
    else if (init == "random")
      c.init = AdapterInit::Random;
    else
      fail("{}: key 'init': expected lora, zero or random, found \"{}\"", origin, init);
  } else {
    fail("{}: key 'peft_type': expected \"LORA\" or \"FLORA\", found \"{}\"", origin, peft_type);
  }
  c.validate(origin);
  return c;
}

std::array<bool, kTargets> parse_targets(const std::string& list) {
  Mask m{};
  bool seen = false;
  std::string item;
  std::stringstream ss(list);
  while (std::getline(ss, item, ',')) {
    const auto b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    item = b == std::string::npos ? "" : item.substr(b, e - b + 1);
    if (item.empty())
      fail("--targets '{}': empty item (expected a comma-separated list of q,k,v,o,gate,up,down)", list);
    bool found = false;
    for (int i = 0; i < kTargets; ++i)
      if (item == target_short_name(static_cast<Target>(i)) || item == kModules[i]) m[i] = found = true;
    if (!found) fail("--targets '{}': unknown projection '{}' (expected q, k, v, o, gate, up, down)", list, item);
    seen = true;
  }
  if (!seen) fail("--targets: empty list (expected a comma-separated list of q,k,v,o,gate,up,down)");
  if (!list.empty() && list.back() == ',')
    fail("--targets '{}': empty item (expected a comma-separated list of q,k,v,o,gate,up,down)", list);
  return m;
}

}  // namespace flora
