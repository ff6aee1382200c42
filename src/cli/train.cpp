// flora train: fine-tune an adapter of any variant, or every weight (--full),
// on JSONL data (train/trainer.h describes the output directory); under
// `mpirun -np N`, data-parallel and bit-identical to one process.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "dist/dist.h"
#include "train/trainer.h"
#include "util/error.h"

namespace flora::cli {

void add_train(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("train", "Fine-tune an adapter (or all weights with --full) on JSONL data");
  struct Options {
    train::TrainOptions t;
    std::string format = "auto", init = "auto", optim = "adamw", schedule = "linear";
  };
  auto o = std::make_shared<Options>();
  train::TrainOptions& t = o->t;
  cmd->add_option("-m,--model", t.model_dir, "Model directory (config.json, weights, tokenizer.json)")->required();
  cmd->add_option("--data", t.data_path,
                  "Training data, JSONL: Alpaca {instruction, input, output}, chat {messages}, "
                  "{input_ids, labels} or {text}")
      ->required();
  cmd->add_option("--eval-data", t.eval_data_path,
                  "Validation data (same forms): loss at the start, end, and every "
                  "--eval-every steps");
  cmd->add_option("--format", o->format, "Record form: auto (from the keys), alpaca, chat, tokenized, text")
      ->check(CLI::IsMember({"auto", "alpaca", "chat", "tokenized", "text"}))
      ->capture_default_str();
  cmd->add_flag("--skip-bad", t.skip_bad, "Skip malformed records (counted) instead of stopping at the first");
  cmd->add_option("--out", t.out_dir, "Output directory (result, checkpoints, train_log.jsonl)")->required();

  auto* full = cmd->add_flag("--full", t.full, "Train every weight (full fine-tuning; also pretraining)");
  cmd->add_option("--variant", t.variant,
                  "Adapter: lora, ffa, ffba, ffba-aorb, ffba-qg, ffba-relu (pf-lora and lora-merged train as lora)")
      ->capture_default_str()
      ->excludes(full);
  cmd->add_option("--rank", t.rank, "Rank R (ffa stores 2R)")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--alpha", t.alpha, "lora_alpha (default 2 x the stored rank: scale 2)")->check(CLI::PositiveNumber);
  cmd->add_option("--targets", t.targets, "LoRA: projections to adapt (default all): q,k,v,o,gate,up,down");
  cmd->add_option("--init", o->init,
                  "Adapter init: lora (PEFT: A Kaiming-uniform, B = C = 0), zero (all 0), or auto: lora for LoRA, "
                  "zero for the FLoRA family")
      ->check(CLI::IsMember({"auto", "lora", "zero"}))
      ->capture_default_str();
  cmd->add_flag("--rslora", t.use_rslora, "Scale by alpha / sqrt(r)");
  cmd->add_option("--nonlinearity", t.nonlinearity, "FLoRA: phi on the low-rank sum: identity, relu, gelu, silu");
  cmd->add_option("--adapter-config", t.adapter_config, "A custom adapter_config.json (instead of --variant/--rank)");
  cmd->add_option("--adapter-init", t.adapter_init, "Start from this adapter directory");

  cmd->add_option("--optim", o->optim, "adamw or sgd")->check(CLI::IsMember({"adamw", "sgd"}))->capture_default_str();
  cmd->add_option("--lr", t.lr, "Peak learning rate")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--weight-decay", t.optim.weight_decay, "AdamW: decoupled; SGD: L2")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--schedule", o->schedule, "Learning-rate decay after warmup: constant, linear, cosine")
      ->check(CLI::IsMember({"constant", "linear", "cosine"}))
      ->capture_default_str();
  cmd->add_option("--warmup-steps", t.warmup_steps, "Linear warmup from 0")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--clip-norm", t.clip_norm, "Clip the global gradient norm (0 = off)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--dropout", t.dropout, "Adapter dropout on the inputs of A (0 = off)")->capture_default_str();
  // Upper bounds far above any real run keep the trainer's products of these
  // (steps x batch, batch x seq-len) inside int64.
  constexpr int64_t kMost = int64_t{1} << 20;
  auto* epochs = cmd->add_option("--epochs", t.epochs, "Passes over the data")->check(CLI::Range(int64_t{1}, kMost));
  cmd->add_option("--steps", t.max_steps, "Optimiser steps (instead of --epochs; the data repeats as needed)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40))
      ->excludes(epochs);
  cmd->add_option("--batch", t.batch, "Sequences per optimiser step")
      ->check(CLI::Range(int64_t{1}, kMost))
      ->capture_default_str();
  cmd->add_option("--micro-batch", t.micro_batch, "Sequences per pass (default --batch); gradients accumulate")
      ->check(CLI::Range(int64_t{1}, kMost));
  cmd->add_option("--seq-len", t.seq_len, "Longest sequence; longer records are truncated (counted)")
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20))
      ->capture_default_str();
  cmd->add_option("--seed", t.seed, "Seed of the data order, the adapter init and dropout")->capture_default_str();
  cmd->add_option("-t,--threads", t.threads, "Threads (default: all cores)")->check(CLI::PositiveNumber);
  add_products_option(cmd);
  cmd->add_option("--eval-every", t.eval_every, "Validation every N steps (0: start and end only)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--save-every", t.save_every, "Checkpoint every N steps (0: at the end only)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--ignore-memory-estimate", t.ignore_memory_estimate,
                "Start even if the memory estimate printed before the first step exceeds the memory available");
  cmd->add_flag("--resume", t.resume, "Continue from the newest checkpoint in --out");
  cmd->add_flag("--save-bf16", t.save_bf16, "--full: write the final model in BF16 (checkpoints stay F32)");
  cmd->add_flag("-q,--quiet", t.quiet, "No progress line");

  cmd->callback([&action, o] {
    action = [o] {
      train::TrainOptions t = o->t;
      t.format = train::parse_data_format(o->format);
      if (o->init != "auto") t.init = o->init == "zero" ? AdapterInit::Zero : AdapterInit::Lora;
      t.optim.kind = train::parse_optimizer_kind(o->optim);
      t.schedule = train::parse_lr_schedule(o->schedule);
      // pf-lora and lora-merged are ways to run a LoRA adapter; training makes the adapter.
      if (t.variant == "pf-lora" || t.variant == "lora-merged") t.variant = "lora";
      const train::TrainSummary s = train::run_training(t);
      if (dist::rank() != 0) return;
      std::printf("train: %lld steps, loss %.4f -> %.4f", static_cast<long long>(s.steps), s.first_loss, s.last_loss);
      if (s.eval_loss >= 0) std::printf(", validation loss %.4f", s.eval_loss);
      std::printf(", %.0f tokens/s, %.1f s, peak memory %.0f MiB -> %s\n", s.tokens_per_s, s.seconds,
                  static_cast<double>(s.peak_rss_bytes) / (1 << 20), s.result_dir.c_str());
      if (dist::size() > 1 && s.train_steps > 0)
        std::printf(
            "train: %d ranks; per step rank 0 spent %.1f ms in communication and %.1f ms waiting for the "
            "slowest rank, and sent %.3f MiB\n",
            dist::size(), 1e3 * s.comm_seconds / static_cast<double>(s.train_steps),
            1e3 * s.wait_seconds / static_cast<double>(s.train_steps),
            static_cast<double>(s.comm_bytes) / static_cast<double>(s.train_steps) / (1 << 20));
    };
  });
}

}  // namespace flora::cli
