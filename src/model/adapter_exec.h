// What the forward pass needs to run an adapter: its matrices as MatrixRefs
// and the flags of its configuration, in execution-ready form. The model layer
// knows adapters only as extra rows and columns of the products it already
// does; files, presets and initialisation live in src/adapters/, which builds
// this from an Adapter (adapters/exec.h).
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "ops/activations.h"
#include "ops/ops.h"

namespace flora {

// The seven projections of a Llama layer an adapter can target, in the order
// of the forward pass. Entry projections (q, k, v / gate, up) share their
// input; exit projections (o / down) write to the residual stream.
enum class Target : int { Q = 0, K, V, O, Gate, Up, Down };
constexpr int kTargets = 7;
constexpr std::array<Target, kTargets> kAllTargets = {Target::Q,    Target::K,  Target::V,   Target::O,
                                                      Target::Gate, Target::Up, Target::Down};
inline bool is_exit(Target t) { return t == Target::O || t == Target::Down; }
inline int index(Target t) { return static_cast<int>(t); }
// "q", "k", "v", "o", "gate", "up", "down" (the --targets spelling, and messages)
inline const char* target_short_name(Target t) {
  static constexpr const char* kNames[kTargets] = {"q", "k", "v", "o", "gate", "up", "down"};
  return kNames[index(t)];
}
// The matrix of projection t in a layer of weights: any struct with the
// fields q, k, v, o, gate, up, down (LayerWeights, LayerView), const or not.
template <typename Layer>
auto& projection(Layer& w, Target t) {
  switch (t) {
    case Target::Q:
      return w.q;
    case Target::K:
      return w.k;
    case Target::V:
      return w.v;
    case Target::O:
      return w.o;
    case Target::Gate:
      return w.gate;
    case Target::Up:
      return w.up;
    case Target::Down:
      break;
  }
  return w.down;
}

enum class AdapterMode {
  FLoRA,               // fused: adapter rows in the base products, epilogues, no extra sync point
  LoRAUnfused,         // PEFT / llama.cpp: base product, A product, B product + scaled add, each separate
  LoRAPartiallyFused,  // A rows inside the base product; B product + add as one more region per group
};

struct AdapterExec {
  AdapterMode mode = AdapterMode::FLoRA;
  int64_t rank = 0;  // r of the matrices
  float scale = 1;   // s
  Nonlinearity nonlinearity = Nonlinearity::Identity;
  std::array<bool, kTargets> forward{}, repeat_add{}, backward{}, carry{};
  struct Layer {
    std::array<MatrixRef, kTargets> A, B, C;  // (r, in), (out, r), (r, r); data null when absent
  };
  std::vector<Layer> layers;
};

// What the training pass (model/train_pass.h) needs of the adapter it trains:
// its values, as the forward reads them, and where its gradients go: f32
// buffers shaped as the matrices (A (r, in), B (out, r), C (r, r)), null where
// a matrix is absent, accumulated with +=. Built by adapters/exec.h from an
// Adapter and its gradient Adapter; the pointers stay valid while those live.
struct AdapterTrainView {
  AdapterExec values;
  struct Layer {
    std::array<float*, kTargets> A{}, B{}, C{};
  };
  std::vector<Layer> grads;
};

}  // namespace flora
