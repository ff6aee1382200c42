// Optimisers over f32 parameters (AdamW and SGD as PyTorch defines them),
// gradient-norm clipping as torch.nn.utils.clip_grad_norm_, and the learning-rate
// schedules of Hugging Face transformers (get_*_schedule_with_warmup).
//
// Parameters are handed over as slots: a name and pointers to the value and the
// gradient, each `size` floats, owned by the caller (the trainer's adapter
// tensors), which must outlive the optimiser.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace flora::train {

struct ParamSlot {
  std::string name;        // unique; the state file names its tensors "m.<name>", "v.<name>"
  float* value = nullptr;  // (size)
  float* grad = nullptr;   // (size)
  int64_t size = 0;
  bool decay = true;  // weight decay applies to this slot
};

enum class OptimizerKind { AdamW, Sgd };

// "adamw" | "sgd"; fails otherwise.
OptimizerKind parse_optimizer_kind(const std::string& name);
std::string optimizer_kind_name(OptimizerKind kind);

struct OptimizerOptions {
  OptimizerKind kind = OptimizerKind::AdamW;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // AdamW (torch's defaults)
  // AdamW: decoupled (p -= lr * wd * p); SGD: L2 (g + wd * p). 0 as in Hugging
  // Face's TrainingArguments (torch.optim.AdamW itself defaults to 0.01).
  double weight_decay = 0.0;
};

class Optimizer {
 public:
  // Fails on invalid options (betas outside [0, 1), eps or weight_decay < 0), and on
  // slots with an empty or repeated name, a negative size, or null pointers.
  Optimizer(const OptimizerOptions& options, std::vector<ParamSlot> slots);

  // One update of every slot's values from its gradients at learning rate `lr`:
  //   AdamW (torch.optim.AdamW, the single-tensor path), with t = the new step count:
  //     p *= 1 - lr*wd                      (decay slots only)
  //     m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
  //     p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
  //   SGD (torch.optim.SGD, momentum 0): g' = g + wd*p (decay slots only); p -= lr g'.
  // Scalars are formed in double and applied in float, as torch does with Python
  // numbers; the state m, v is f32. Gradients are left as they are (zero_grads()).
  void step(double lr);
  void zero_grads();

  int64_t step_count() const { return step_; }  // updates taken (torch's state['step'])
  const std::vector<ParamSlot>& slots() const { return slots_; }
  const OptimizerOptions& options() const { return options_; }
  // AdamW's moments of slot i, (size) each; empty for SGD.
  const std::vector<float>& m(size_t i) const;
  const std::vector<float>& v(size_t i) const;
  // The whole state as buffers, for handing it from one rank to the others
  // (a run resumed under mpirun: rank 0 reads the checkpoint): AdamW's m and v
  // of every slot, in slot order, (size) each; none for SGD. With the step
  // count, set_step_count() and the slots' values, an optimiser equal to the sender's.
  std::vector<std::vector<float>*> state_buffers();
  void set_step_count(int64_t steps);

  // The state as safetensors (written atomically): F32 tensors "m.<name>" and
  // "v.<name>" of shape [size] per slot (none for SGD), and __metadata__
  // {"optimizer": "adamw"|"sgd", "step": "<step count>"}.
  void save_state(const std::string& path) const;
  // Reads a file of save_state into this optimiser. Fails, naming the file and the
  // tensor, when the optimiser kind differs, a slot's tensor is missing, has another
  // dtype or shape, or the file holds a tensor of no slot; nothing is changed then.
  void load_state(const std::string& path);

 private:
  OptimizerOptions options_;
  std::vector<ParamSlot> slots_;
  std::vector<std::vector<float>> m_, v_;  // per slot, (size); AdamW only
  int64_t step_ = 0;
};

// sqrt(sum of every slot's grad^2), accumulated in double.
double global_grad_norm(const std::vector<ParamSlot>& slots);

// torch.nn.utils.clip_grad_norm_: coef = max_norm / (norm + 1e-6); gradients are
// scaled by coef only when coef < 1. max_norm 0 turns clipping off. Returns the norm
// before clipping. A NaN norm leaves the gradients as they are: the caller is
// expected to check the returned norm and skip the step.
double clip_grad_norm(const std::vector<ParamSlot>& slots, double max_norm);

enum class LrSchedule { Constant, Linear, Cosine };

// "constant" | "linear" | "cosine"; fails otherwise.
LrSchedule parse_lr_schedule(const std::string& name);
std::string lr_schedule_name(LrSchedule schedule);

// The learning rate for the update that follows `step` updates already taken
// (step = 0 for the first update), as Hugging Face's
// get_{constant,linear,cosine}_schedule_with_warmup compute it (LambdaLR's lambda(step)):
//   step < warmup_steps: base_lr * step / warmup_steps   (0 at step 0)
//   then Constant: base_lr
//        Linear:   base_lr * (total - step) / (total - warmup), reaching 0 at step = total
//        Cosine:   base_lr * 0.5 * (1 + cos(pi * (step - warmup) / (total - warmup)))
// Denominators are at least 1 as in HF. Beyond total_steps Linear and Cosine stay at
// 0 (HF's cosine would rise again there; a run never gets that far). Fails on
// negative arguments.
double learning_rate(LrSchedule schedule, double base_lr, int64_t step, int64_t warmup_steps, int64_t total_steps);

}  // namespace flora::train
