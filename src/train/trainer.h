// The training loop behind `flora train`: an adapter of any variant, or every
// weight (full fine-tuning, also how flora pretrains small base models), on
// JSONL data, with AdamW or SGD, warmup and decay, clipping, gradient
// accumulation, validation, and checkpoints a killed run resumes from.
//
// Output directory (--out DIR):
//   DIR/adapter/ or DIR/model/   the result (an adapter directory as PEFT
//                                writes one; a model directory flora and
//                                transformers load, with the tokenizer)
//   DIR/checkpoint-<step>/       the trained tensors (as above), optimizer.safetensors
//                                and trainer_state.json; the last two are kept
//   DIR/latest                   the name of the newest complete checkpoint
//   DIR/train_log.jsonl          one line per step {"step", "loss", "lr", ...}
//                                and per validation {"step", "eval_loss", ...}
//   DIR/train_config.json        the options of the run
// Every file is written under a temporary name and renamed when complete, and
// the directory holding it synced after the rename. A checkpoint or the result
// is written whole under <name>.tmp and then renamed in (exchanged with the old
// version when one exists); `latest` changes only after its checkpoint is
// complete and the log lines up to it are synced, and the checkpoint it names is
// never written over. So a run killed at any moment, or cut by a power loss,
// leaves a complete checkpoint that `latest` names, and --resume continues from
// it. A failed write (a full disk) ends the run with an error naming the file,
// with the last checkpoint intact. Values loaded at --resume (the trained
// tensors, the optimiser's moments) and from --adapter-init must be finite:
// a NaN or Inf is refused, naming the file and the tensor.
//
// Test hooks (environment variables, for tests/cli/train.sh only): the process
// raises SIGKILL on itself in the middle of a write, as a crash would end it.
//   FLORA_TEST_DIE_IN_CHECKPOINT=<step>  while writing the checkpoint of that
//                                        step: after the trained tensors, before
//                                        the optimiser state and trainer_state.json
//   FLORA_TEST_DIE_IN_RESULT=1           while writing the result: after it is
//                                        written under DIR/adapter.tmp (or
//                                        model.tmp), before it replaces DIR/adapter
//
// Determinism: the data order depends on (seed, epoch), dropout masks on
// (seed, step, micro-batch), and the training pass does not depend on the
// thread count, so a resumed run reproduces the losses of an uninterrupted
// one bit for bit.
//
// Data parallelism (`mpirun -np N flora train ...`, dist/dist.h): each rank
// runs a contiguous share of every step's micro-batches, the gradients are
// summed in one fixed order (train_step in trainer.cpp says how), and every
// rank applies the same update, so the losses and the result are those of one
// process bit for bit; N must divide the micro-batches of a step. Rank 0 alone
// reads and writes --out (log, checkpoints, result) and prints; at --resume it
// reads the checkpoint and hands it to the others, so N may change between runs.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "adapters/adapter.h"
#include "model/dense_weights.h"
#include "train/data.h"
#include "train/optimizer.h"

namespace flora::train {

struct TrainOptions {
  std::string model_dir, data_path, eval_data_path, out_dir;
  DataFormat format = DataFormat::Auto;
  bool skip_bad = false;

  // What is trained: `full`, or an adapter: a preset (variant, rank, alpha,
  // targets, init, rslora), a configuration file, or an existing adapter
  // directory to continue from.
  bool full = false;
  std::string variant = "ffba";
  int64_t rank = 8;
  double alpha = 0;     // 0: 2 x the stored rank (scale 2)
  std::string targets;  // LoRA: q,k,v,o,gate,up,down (default all)
  // Unset: PEFT's init for LoRA, zero for the FLoRA family. With PEFT's init
  // (A random, B = C = 0) repeat-and-add shows A at step 0 and the fine-tune
  // starts far from the base (validation loss 6.2 against the base's 2.6 on
  // the demo's tasks), and after 60 steps FFBA reaches 1.02 with it against
  // 0.65 with zero (LoRA: 0.62; 3 seeds, docs/results.md).
  std::optional<AdapterInit> init;
  bool use_rslora = false;
  std::string nonlinearity;    // "", or identity|relu|gelu|silu to override the preset's
  std::string adapter_config;  // a custom adapter_config.json (replaces variant/rank/alpha)
  std::string adapter_init;    // start from this adapter directory

  OptimizerOptions optim;
  double lr = 2e-4;
  LrSchedule schedule = LrSchedule::Linear;
  int64_t warmup_steps = 0;
  double clip_norm = 1.0;  // 0 = off
  float dropout = 0;       // adapter dropout, 0 = off

  int64_t epochs = 1;
  int64_t max_steps = 0;    // > 0: this many optimiser steps (the data repeats as needed)
  int64_t batch = 8;        // sequences per optimiser step
  int64_t micro_batch = 0;  // sequences per pass (0: = batch); gradients accumulate
  // Start even when the memory estimate exceeds what the machine has available.
  bool ignore_memory_estimate = false;
  int64_t seq_len = 512;
  uint64_t seed = 0;
  int threads = 0;  // 0: all cores

  int64_t eval_every = 0;  // validation every N steps (0: only at the end)
  int64_t save_every = 0;  // checkpoint every N steps (0: only at the end)
  bool resume = false;
  bool save_bf16 = false;  // full fine-tuning: write the model in BF16 (checkpoints stay F32)
  bool quiet = false;      // no progress line
};

struct TrainSummary {
  int64_t steps = 0, trainable = 0;
  double first_loss = 0, last_loss = 0, eval_loss = -1;
  double seconds = 0, tokens_per_s = 0;
  int64_t peak_rss_bytes = 0;
  std::string result_dir;
  // Under mpirun, over the train_steps steps of this run: this rank's time in
  // the sums and gathers, its time waiting for the slowest rank before them, and
  // the bytes it sent.
  double comm_seconds = 0, wait_seconds = 0;
  int64_t comm_bytes = 0, train_steps = 0;
};

TrainSummary run_training(const TrainOptions& options);

// The optimiser's slots: every matrix of an adapter (named as in its file,
// all with weight decay) with its gradient in `grads` (same shapes), or every
// tensor of a dense model (weight decay on matrices, not on norm weights, as
// Hugging Face's Trainer). The pointers stay valid while both live unresized.
std::vector<ParamSlot> adapter_slots(Adapter& values, Adapter& grads);
std::vector<ParamSlot> dense_slots(DenseWeights& values, DenseWeights& grads);

}  // namespace flora::train
