// The adapter family of ../shared/docs/ADAPTERS.md as one configuration: every
// named variant (lora, lora-merged, pf-lora, ffa, ffba, ffba-aorb, ffba-qg,
// ffba-relu) is a preset of AdapterConfig, and a reading of the paper that
// differs from ours is a different value, not new code.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "model/adapter_exec.h"
#include "util/json.h"

namespace flora {

// Target, kTargets, kAllTargets, is_exit and Nonlinearity come from
// model/adapter_exec.h, the forward pass's view of an adapter.
// "q_proj", ... (PEFT's target_modules spelling)
const char* target_module(Target t);
// "self_attn.q_proj", ..., "mlp.down_proj" (the path inside a layer)
const char* target_path(Target t);

enum class AdapterFamily { LoRA, FLoRA };
// How a LoRA adapter runs (ADAPTERS.md): unfused as PEFT and llama.cpp run it,
// partially fused (A rows inside the base product), or merged into W at load.
enum class LoraExecution { Unfused, PartiallyFused, Merged };
// The LoRA variants are one adapter file run three ways: "lora" (Unfused),
// "pf-lora" (PartiallyFused), "lora-merged" (Merged).
const char* lora_variant_name(LoraExecution e);
std::optional<LoraExecution> lora_execution_of(std::string_view variant);  // nullopt: not a LoRA variant
enum class AdapterInit { Lora, Zero, Random };

struct AdapterConfig {
  std::string variant = "custom";  // preset name, or "custom"
  AdapterFamily family = AdapterFamily::LoRA;
  LoraExecution lora_execution = LoraExecution::Unfused;  // LoRA family only
  int64_t rank = 0;                                       // r of the stored matrices (ffa: 2 x the requested rank)
  double alpha = 16;
  bool use_rslora = false;
  // Per projection (indexed by Target):
  std::array<bool, kTargets> forward{};     // has A (r, in): LoRA's A, FLoRA's forward adapter
  std::array<bool, kTargets> repeat_add{};  // FLoRA: y_m += s * tile(z_m)
  std::array<bool, kTargets> backward{};    // FLoRA exits: B (out, r) consumes phi(z) of the sub-block
  std::array<bool, kTargets> carry{};       // FLoRA exits: C (r, r); A c + C phi(z) joins the next sub-block's sum
  Nonlinearity nonlinearity = Nonlinearity::Identity;
  AdapterInit init = AdapterInit::Lora;

  // s = alpha / r, or alpha / sqrt(r) with rsLoRA.
  double scale() const;
  // Presets of ADAPTERS.md. `rank` is the requested rank R (ffa stores 2R).
  // targets: which projections LoRA adapts (FLoRA presets ignore it and use
  // their own layout). Fails naming the known variants.
  static AdapterConfig preset(const std::string& variant, int64_t rank, double alpha,
                              const std::array<bool, kTargets>& lora_targets = {true, true, true, true, true, true,
                                                                                true});
  // Checks internal consistency (carry needs forward A on the exit, backward only on
  // exits, ...); fails with `origin` and the field named.
  void validate(const std::string& origin) const;

  // adapter_config.json: PEFT's format for the LoRA family ("peft_type": "LORA"),
  // ADAPTERS.md's for the FLoRA family ("peft_type": "FLORA").
  Json to_json() const;
  static AdapterConfig from_json(const Json& j, const std::string& origin);
};

const char* nonlinearity_name(Nonlinearity n);  // "identity", "relu", "gelu", "silu"
// --targets q,k,v,o,gate,up,down -> mask; fails naming the unknown item.
std::array<bool, kTargets> parse_targets(const std::string& list);

}  // namespace flora
