#include "train/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "adapters/adapter.h"
#include "adapters/exec.h"
#include "dist/dist.h"
#include "io/tensor_store.h"
#include "model/dense_weights.h"
#include "model/gguf_llama.h"
#include "model/train_pass.h"
#include "ops/ops.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/file.h"
#include "util/json.h"
#include "util/progress.h"
#include "util/timer.h"

namespace flora::train {

namespace fs = std::filesystem;

namespace {

// Checkpoints kept on disk: the newest and the one before (in case the newest
// is being replaced when the process dies).
constexpr int kCheckpointsKept = 2;

// The test hooks of trainer.h: the value of the environment variable, or -1.
int64_t test_hook(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return -1;
  char* end = nullptr;
  const long long n = std::strtoll(v, &end, 10);
  if (*end != '\0' || n < 0) fail("{}: expected an integer >= 0, found '{}'", name, v);
  return n;
}

// The hook fires: the process ends as `kill -9` ends it, with no destructor,
// flush or cleanup, in the middle of the write the hook names.
void die_for_test(const char* name, const std::string& where) {
  std::fprintf(stderr, "train: %s: killing this process while writing %s\n", name, where.c_str());
  std::raise(SIGKILL);
}

// Optimiser moments read back from a checkpoint must be finite: a NaN would
// not fail at load but turn every later loss into NaN, many steps on. (The
// adapter and model tensors of a checkpoint or --adapter-init are checked by
// their loaders, Adapter::load and LlamaModel::load.)
void check_finite(const std::string& file, const std::string& tensor, const std::vector<float>& v) {
  if (const int64_t k = first_nonfinite(v.data(), DType::F32, static_cast<int64_t>(v.size())); k >= 0)
    fail("{}: tensor '{}': expected finite values, found {} at element {}", file, tensor, v[k], k);
}

// checkpoint-<step> exactly (no staging or leftover suffix): the step, or -1.
int64_t checkpoint_step(const std::string& name) {
  if (name.rfind("checkpoint-", 0) != 0 || name.size() == 11) return -1;
  for (size_t i = 11; i < name.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(name[i]))) return -1;
  try {
    return std::stoll(name.substr(11));
  } catch (...) {
    return -1;
  }
}

// A "Key:   N kB" line of a /proc file, in bytes (0 where unreadable):
// /proc/self/status's VmHWM (peak) and VmRSS, /proc/meminfo's MemAvailable
// (what can be allocated without swapping).
int64_t proc_kb(const char* file, const char* key) {
  std::ifstream in(file);
  std::string line;
  const size_t n = std::strlen(key);
  while (std::getline(in, line))
    if (line.compare(0, n, key) == 0) return std::stoll(line.substr(n)) * 1024;
  return 0;
}

int64_t peak_rss_bytes() { return proc_kb("/proc/self/status", "VmHWM:"); }

// What the run will hold at its largest, from the shapes of its buffers.
struct MemoryEstimate {
  int64_t weights = 0;    // the base as loaded, plus full fine-tuning's f32 copy
  int64_t trainable = 0;  // gradients and optimiser moments (and an adapter's values)
  TrainPassBytes pass;    // activations and scratch of one micro-batch of the longest sequences
  int64_t total() const { return weights + trainable + pass.total(); }
};

constexpr double kMiB = 1024.0 * 1024.0;

// Prints the estimate before the first step; refuses (unless told to ignore it) a run whose
// estimate exceeds the memory available now plus what this process already holds.
void check_memory(const TrainOptions& o, const LlamaConfig& cfg, const MemoryEstimate& e, int64_t longest,
                  int threads, bool lead) {
  // FLORA_TEST_MEMORY_AVAILABLE_MIB stands in for the machine's memory (tests).
  const int64_t test_mib = test_hook("FLORA_TEST_MEMORY_AVAILABLE_MIB");
  const int64_t available = test_mib >= 0 ? test_mib * 1024 * 1024
                                          : proc_kb("/proc/meminfo", "MemAvailable:") +
                                                proc_kb("/proc/self/status", "VmRSS:");
  const std::string parts =
      fmt::format("weights {:.0f}, gradients and optimiser state {:.0f}, activations {:.0f} MiB for a micro-batch "
                  "of {} x {} tokens",
                  e.weights / kMiB, e.trainable / kMiB, e.pass.total() / kMiB, o.micro_batch, longest);
  if (lead)
    std::fprintf(stderr, "train: memory estimate %.0f MiB (%s); %.0f MiB available\n", e.total() / kMiB,
                 parts.c_str(), available / kMiB);
  if (available <= 0 || e.total() <= available || o.ignore_memory_estimate) return;
  const int64_t per_sequence = train_pass_bytes(cfg, 1, longest, o.full ? 0 : o.rank, o.full, threads).total();
  const int64_t fixed = e.total() - e.pass.total();
  const int64_t fit = fixed < available ? (available - fixed) / std::max<int64_t>(per_sequence, 1) : 0;
  std::string how;
  if (fit >= 1 && fit < o.micro_batch)
    how = fmt::format("--micro-batch {} (each sequence of {} tokens holds {:.1f} MiB; gradients accumulate, the "
                      "result is the same)",
                      fit, longest, per_sequence / kMiB);
  else
    how = fmt::format("a shorter --seq-len (the saved activations grow with it; now {})", longest);
  if (o.full) how += ", or an adapter instead of --full (it keeps no gradients or moments of the base)";
  fail(
      "train: this run needs about {:.0f} MiB ({}), more than the {:.0f} MiB this machine has available; use {}; "
      "--ignore-memory-estimate starts it anyway",
      e.total() / kMiB, parts, available / kMiB, how);
}

// Options that decide the trajectory: a resumed run must have the same ones.
Json trajectory_json(const TrainOptions& o) {
  Json j;
  j["model"] = o.model_dir;
  j["data"] = o.data_path;
  j["format"] = data_format_name(o.format);
  j["full"] = o.full;
  if (!o.full) {
    j["variant"] = o.variant;
    j["rank"] = o.rank;
    j["alpha"] = o.alpha;
    j["targets"] = o.targets;
    j["init"] = !o.init                        ? "auto"
                : *o.init == AdapterInit::Lora ? "lora"
                : *o.init == AdapterInit::Zero ? "zero"
                                               : "random";
    j["rslora"] = o.use_rslora;
    j["nonlinearity"] = o.nonlinearity;
    j["adapter_config"] = o.adapter_config;
    j["adapter_init"] = o.adapter_init;
  }
  j["optim"] = optimizer_kind_name(o.optim.kind);
  j["weight_decay"] = o.optim.weight_decay;
  j["lr"] = o.lr;
  j["schedule"] = lr_schedule_name(o.schedule);
  j["warmup_steps"] = o.warmup_steps;
  j["clip_norm"] = o.clip_norm;
  j["dropout"] = o.dropout;
  j["epochs"] = o.epochs;
  j["max_steps"] = o.max_steps;
  j["batch"] = o.batch;
  j["micro_batch"] = o.micro_batch;
  j["seq_len"] = o.seq_len;
  j["seed"] = o.seed;
  // --products bf16 rounds the forward's inputs of the BF16 base products (ops.h), so it
  // changes the losses; the one in effect, which also depends on the CPU.
  j["products"] = ops::products_name();
  return j;
}

// What is trained, with its gradients and the optimiser's view of both.
struct Trainable {
  std::unique_ptr<Adapter> adapter, adapter_grads;
  std::unique_ptr<DenseWeights> dense, dense_grads;
  TrainGrads grads_view;
  std::vector<ParamSlot> slots;

  int64_t parameter_count() const { return adapter ? adapter->parameter_count() : dense->size(); }

  void make_slots() { slots = adapter ? adapter_slots(*adapter, *adapter_grads) : dense_slots(*dense, *dense_grads); }

  // A checkpoint or the result: the adapter directory, or a model directory.
  void save(const std::string& dir, const std::string& model_dir, bool bf16) const {
    if (adapter) {
      adapter->save(dir);
      return;
    }
    dense->save(dir, bf16 ? DType::BF16 : DType::F32);
    for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"})
      if (fs::exists(model_dir + "/" + name)) write_file_atomic(dir + "/" + name, read_file(model_dir + "/" + name));
  }

  // Values from a checkpoint written by save().
  void load(const std::string& dir, const LlamaConfig& config) {
    if (adapter) {
      const Adapter saved = Adapter::load(dir, config);
      for (size_t l = 0; l < adapter->layers.size(); ++l)
        for (Target t : kAllTargets)
          for (char which : {'A', 'B', 'C'}) {
            auto& d = adapter->layers[l].matrix(t, which).data;
            const auto& s = saved.layers[l].matrix(t, which).data;
            if (d.size() != s.size()) fail("{}: checkpoint adapter does not match the run's configuration", dir);
            std::copy(s.begin(), s.end(), d.begin());
          }
      return;
    }
    const auto model = LlamaModel::load(dir);
    const DenseWeights saved = DenseWeights::from_model(*model);
    if (saved.size() != dense->size()) fail("{}: checkpoint model does not match the run's model", dir);
    dense->data = saved.data;
  }

  void zero_grads() {
    for (const ParamSlot& s : slots) std::fill(s.grad, s.grad + s.size, 0.0f);
  }

  // The gradients of every slot end to end, in slot order: (grad_floats()) floats.
  int64_t grad_floats() const {
    int64_t n = 0;
    for (const ParamSlot& s : slots) n += s.size;
    return n;
  }
  // acc += the slots' gradients (one addition per element), or out = them.
  void add_grads_to(std::vector<float>& acc) const {
    float* a = acc.data();
    for (const ParamSlot& s : slots)
      for (int64_t i = 0; i < s.size; ++i) *a++ += s.grad[i];
  }
  void copy_grads_to(std::vector<float>& out) const {
    out.resize(static_cast<size_t>(grad_floats()));
    float* o = out.data();
    for (const ParamSlot& s : slots) o = std::copy(s.grad, s.grad + s.size, o);
  }
  void set_grads(const std::vector<float>& from) {
    const float* f = from.data();
    for (const ParamSlot& s : slots) {
      std::copy(f, f + s.size, s.grad);
      f += s.size;
    }
  }
  // Every rank gets `root`'s values (a resumed run: rank 0 read the checkpoint).
  void broadcast_values(int root) {
    for (const ParamSlot& s : slots) dist::broadcast(s.value, s.size * static_cast<int64_t>(sizeof(float)), root);
  }
};

AdapterConfig adapter_config_of(const TrainOptions& o, const LlamaConfig& model) {
  if (!o.adapter_init.empty()) {
    const Json j =
        parse_json(read_file(o.adapter_init + "/adapter_config.json"), o.adapter_init + "/adapter_config.json");
    return AdapterConfig::from_json(j, o.adapter_init + "/adapter_config.json");
  }
  if (!o.adapter_config.empty()) {
    AdapterConfig c =
        AdapterConfig::from_json(parse_json(read_file(o.adapter_config), o.adapter_config), o.adapter_config);
    c.init = o.init.value_or(c.family == AdapterFamily::FLoRA ? AdapterInit::Zero : AdapterInit::Lora);
    return c;
  }
  std::array<bool, kTargets> targets{true, true, true, true, true, true, true};
  const bool lora_family = lora_execution_of(o.variant).has_value();
  if (!o.targets.empty()) {
    if (!lora_family)
      fail("--targets applies to the LoRA variants only; the FLoRA preset '{}' has its own layout", o.variant);
    targets = parse_targets(o.targets);
  }
  AdapterConfig c = AdapterConfig::preset(o.variant, o.rank, o.alpha > 0 ? o.alpha : 1.0, targets);
  if (o.alpha <= 0) c.alpha = 2.0 * static_cast<double>(c.rank);
  c.use_rslora = o.use_rslora;
  c.init = o.init.value_or(c.family == AdapterFamily::FLoRA ? AdapterInit::Zero : AdapterInit::Lora);
  if (!o.nonlinearity.empty()) {
    if (c.family != AdapterFamily::FLoRA) fail("--nonlinearity applies to the FLoRA variants only");
    bool found = false;
    for (Nonlinearity n : {Nonlinearity::Identity, Nonlinearity::ReLU, Nonlinearity::GELU, Nonlinearity::SiLU})
      if (o.nonlinearity == nonlinearity_name(n)) c.nonlinearity = n, found = true;
    if (!found) fail("--nonlinearity: expected identity, relu, gelu or silu, got '{}'", o.nonlinearity);
  }
  (void)model;
  return c;
}

void check_options(const TrainOptions& o) {
  if (o.model_dir.empty()) fail("--model is required");
  if (o.data_path.empty()) fail("--data is required");
  if (o.out_dir.empty()) fail("--out is required");
  if (o.lr <= 0 || !std::isfinite(o.lr)) fail("--lr must be positive, got {}", o.lr);
  if (o.batch <= 0) fail("--batch must be positive, got {}", o.batch);
  if (o.micro_batch < 0 || o.micro_batch > o.batch)
    fail("--micro-batch must be between 1 and --batch ({}), got {}", o.batch, o.micro_batch);
  if (o.seq_len < 2) fail("--seq-len must be at least 2, got {}", o.seq_len);
  if (o.epochs <= 0 && o.max_steps <= 0) fail("--epochs or --steps must be positive");
  if (o.clip_norm < 0) fail("--clip-norm must be >= 0 (0 = off), got {}", o.clip_norm);
  if (!(o.dropout >= 0 && o.dropout < 1)) fail("--dropout must be in [0, 1), got {}", o.dropout);
  if (!o.full && o.rank <= 0 && o.adapter_config.empty() && o.adapter_init.empty())
    fail("--rank must be positive, got {}", o.rank);
}

// Mean loss over the targets of a dataset, forward only. Summed sequence by
// sequence in data order, so it does not depend on --micro-batch: a run that
// starts from an adapter logs the loss its maker ended with, bit for bit.
// Under mpirun each rank runs its share of the micro-batches (dist::share) and
// the sequence losses are gathered, in data order, before the sum: the same
// value on every rank, and the same as one process's.
double evaluate(TrainPass& pass, const Dataset& data, int64_t micro_batch, int32_t pad_id) {
  // Without dropout (as PEFT's eval mode): the training steps set it anew for
  // each micro-batch, and a validation must not depend on the masks of the step
  // before it (a run resumed at its last step has drawn none).
  pass.set_dropout(0, 0);
  const size_t n = data.examples.size(), mb = static_cast<size_t>(micro_batch);
  const dist::Share mine = dist::my_share(static_cast<int64_t>((n + mb - 1) / mb));
  std::vector<double> losses;  // this rank's sequences, in data order
  for (size_t i = static_cast<size_t>(mine.begin) * mb; i < static_cast<size_t>(mine.end) * mb; i += mb) {
    std::vector<size_t> idx;
    for (size_t j = i; j < std::min(n, i + mb); ++j) idx.push_back(j);
    const Batch b = make_batch(data.examples, idx, pad_id);
    pass.run(TrainBatch{b.B, b.T, b.tokens.data(), b.targets.data()}, false, 1.0f);
    losses.insert(losses.end(), pass.sequence_losses().begin(), pass.sequence_losses().end());
  }
  double loss = 0;
  for (double l : dist::allgather_values(losses)) loss += l;
  int64_t count = 0;
  for (const Example& e : data.examples) count += target_count(e);
  return count > 0 ? loss / static_cast<double>(count) : 0.0;
}

std::string checkpoint_name(int64_t step) { return fmt::format("checkpoint-{}", step); }

// Where a run starts: step 0, or the checkpoint `latest` names.
struct StartPoint {
  int64_t step = 0;
  std::string dir;         // the checkpoint this run started from ("" for a fresh run)
  double logged_loss = 0;  // the loss logged at its step (the summary of a run with no step left)
};

// Drops the log lines of steps after `step` (they belong to lost steps). A run
// resumed at its last step validates again (its result was not complete): that
// validation line is dropped too, and written anew to the same value.
void keep_log_until(const std::string& log_path, int64_t step, int64_t total_steps, StartPoint& start) {
  std::string kept;
  if (fs::exists(log_path)) {
    std::istringstream in(read_file(log_path));
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      const Json j = Json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) continue;
      const int64_t at = j["step"].get<int64_t>();
      if (at == step && j.contains("loss") && j["loss"].is_number()) start.logged_loss = j["loss"].get<double>();
      if (at < step || (at == step && !(step == total_steps && j.contains("eval_loss")))) kept += line + "\n";
    }
  }
  write_file_atomic(log_path, kept);
}

// --resume: the checkpoint `latest` names, checked against this run's
// trajectory, its values loaded into tr and optimizer, the log cut back to it.
StartPoint resume(const TrainOptions& o, const Json& trajectory, int64_t total_steps, const LlamaConfig& cfg,
                  Trainable& tr, Optimizer& optimizer, const std::string& log_path) {
  const std::string latest_path = o.out_dir + "/latest";
  if (!fs::exists(latest_path)) fail("--resume: {} has no checkpoint ({} is missing)", o.out_dir, latest_path);
  std::string name = read_file(latest_path);
  while (!name.empty() && std::isspace(static_cast<unsigned char>(name.back()))) name.pop_back();
  StartPoint start;
  start.dir = o.out_dir + "/" + name;
  const std::string state_path = start.dir + "/trainer_state.json";
  const Json state = parse_json(read_file(state_path), state_path);
  if (!state.is_object() || !state.contains("trajectory") || !state.at("trajectory").is_object())
    fail("{}: expected an object with 'trajectory' (a trainer state)", state_path);
  const Json& saved = state.at("trajectory");
  for (auto it = trajectory.begin(); it != trajectory.end(); ++it) {
    // States written before "products" existed were all f32 products.
    const bool known = saved.contains(it.key()) || it.key() == "products";
    const Json was = saved.contains(it.key()) ? saved.at(it.key()) : Json("f32");
    if (!known || was != it.value())
      fail("--resume: {} was written with {} = {}, this run has {}", state_path, it.key(),
           known ? was.dump() : "(none)", it.value().dump());
  }
  start.step = json_get<int64_t>(state, "step", state_path);
  if (start.step < 0 || start.step > total_steps)
    fail("{}: 'step': expected 0 to {} (the run's steps), found {}", state_path, total_steps, start.step);
  tr.load(start.dir, cfg);
  const std::string optimizer_path = start.dir + "/optimizer.safetensors";
  optimizer.load_state(optimizer_path);
  if (optimizer.step_count() != start.step)
    fail("{}: __metadata__ 'step': expected {} (the step of {}), found {}", optimizer_path, start.step, state_path,
         optimizer.step_count());
  // A NaN moment would survive the update as a NaN weight; v < 0 is a NaN at sqrt(v).
  for (size_t i = 0; i < optimizer.slots().size() && o.optim.kind == OptimizerKind::AdamW; ++i) {
    const std::string& slot = optimizer.slots()[i].name;
    check_finite(optimizer_path, "m." + slot, optimizer.m(i));
    check_finite(optimizer_path, "v." + slot, optimizer.v(i));
    for (size_t k = 0; k < optimizer.v(i).size(); ++k)
      if (optimizer.v(i)[k] < 0)
        fail("{}: tensor 'v.{}': expected values >= 0 (squared gradients), found {} at element {}", optimizer_path,
             slot, optimizer.v(i)[k], k);
  }
  keep_log_until(log_path, start.step, total_steps, start);
  std::fprintf(stderr, "train: resuming from %s (step %lld of %lld)\n", start.dir.c_str(),
               static_cast<long long>(start.step), static_cast<long long>(total_steps));
  return start;
}

// A fresh run: `latest` goes first, so that a resume never finds it naming a
// checkpoint that is half deleted.
void start_fresh(const std::string& out_dir, const std::string& log_path) {
  fs::remove(out_dir + "/latest");
  sync_directory(out_dir);
  for (const auto& entry : fs::directory_iterator(out_dir))
    if (entry.path().filename().string().rfind("checkpoint-", 0) == 0) fs::remove_all(entry.path());
  write_file_atomic(log_path, "");
}

// Checkpoints older than the kept number go, and so do newer ones than
// `newest` (left by a run killed before it updated `latest`: they belong to
// lost steps) and leftovers of staging.
void rotate_checkpoints(const std::string& out_dir, int64_t newest) {
  std::vector<int64_t> steps;
  for (const auto& entry : fs::directory_iterator(out_dir)) {
    const std::string f = entry.path().filename().string();
    if (f.rfind("checkpoint-", 0) != 0) continue;
    const int64_t s = checkpoint_step(f);
    if (s < 0 && (f.ends_with(".tmp") || f.ends_with(".old")))
      fs::remove_all(entry.path());
    else if (s > newest)
      fs::remove_all(entry.path());
    else if (s >= 0 && entry.is_directory())
      steps.push_back(s);
  }
  std::sort(steps.rbegin(), steps.rend());
  for (size_t i = kCheckpointsKept; i < steps.size(); ++i) fs::remove_all(out_dir + "/" + checkpoint_name(steps[i]));
}

// One checkpoint: written whole under checkpoint-<step>.tmp, then renamed in,
// and only then does `latest` name it; the directory is synced after each
// rename. The log lines up to this step are made durable first, so a resume
// from it finds them all. die_at: the test hook's step (-1: none).
void write_checkpoint(const TrainOptions& o, int64_t at_step, int64_t total_steps, const Json& trajectory,
                      const Trainable& tr, const Optimizer& optimizer, AppendFile& log, int64_t die_at) {
  const std::string name = checkpoint_name(at_step);
  const std::string dir = o.out_dir + "/" + name;
  const std::string staged = dir + ".tmp";
  fs::remove_all(staged);  // a leftover of a run killed while writing it
  tr.save(staged, o.model_dir, false);
  if (at_step == die_at) die_for_test("FLORA_TEST_DIE_IN_CHECKPOINT", staged);
  optimizer.save_state(staged + "/optimizer.safetensors");
  Json state;
  state["step"] = at_step;
  state["total_steps"] = total_steps;
  state["trajectory"] = trajectory;
  write_file_atomic(staged + "/trainer_state.json", state.dump(2) + "\n");
  log.sync();
  replace_directory(staged, dir);
  write_file_atomic(o.out_dir + "/latest", name + "\n");
  rotate_checkpoints(o.out_dir, at_step);
}

// The result, like a checkpoint, is written whole beside the old one and
// exchanged with it: until then the old result and the last checkpoint stand.
std::string write_result(const TrainOptions& o, const Trainable& tr, bool die_in_result) {
  const std::string result = o.out_dir + (o.full ? "/model" : "/adapter");
  const std::string staged = result + ".tmp";
  fs::remove_all(staged);
  tr.save(staged, o.model_dir, o.save_bf16);
  if (die_in_result) die_for_test("FLORA_TEST_DIE_IN_RESULT", staged);
  replace_directory(staged, result);
  return result;
}

struct StepResult {
  double loss = 0, grad_norm = 0, lr = 0;
  int64_t tokens = 0;
  // Under mpirun, this rank's time in the step's sums and gathers (comm_s) and,
  // before them, waiting for the slowest rank to finish its micro-batches (wait_s).
  double comm_s = 0, wait_s = 0;
};

// Where a step's gradient is summed: acc (G) = every slot's gradient end to
// end; held (ranks > 0): the gradient of each of this rank's micro-batches
// (G each), until the sum over the micro-batches before them arrives.
struct StepGrads {
  std::vector<float> acc;
  std::vector<std::vector<float>> held;
};

// One optimiser step over the sequences order[b0, b1): the gradient of the
// mean loss over the step's targets (whatever the micro-batching), then
// clipping and the update.
//
// The step's gradient is a left fold over its micro-batches in data order,
// ((g_0 + g_1) + g_2) + ..., each g_m computed by the pass into zeroed buffers.
// The pass does not add a micro-batch into a non-zero buffer in one addition
// per element (full fine-tuning adds the LM head's rows in chunks, the
// embedding's per token, the norms' per row), so accumulating on top of the
// last micro-batch would tie each micro-batch to the one before; a g_m from
// zero depends on micro-batch m alone (TrainPass.MicroBatchGradientIsItsOwn),
// and any rank can compute it. Each rank runs a contiguous share of the
// micro-batches (dist::share); rank 0 folds its own into acc, the others keep
// theirs in `held` and add them, in order, to the running sum that
// dist::ordered_fold passes from rank to rank; the whole sum comes back to
// every rank, which applies the same update. One process is the one-rank case
// of this and gives the same bits as N ranks for any N. For an adapter the
// pass does add each micro-batch in one addition per element, so this is also
// exactly what accumulating in place gave before
// (TrainPass.AdapterGradientsAccumulateInOneAddition). Sequence losses are
// gathered in data order and summed in that order, as before.
StepResult train_step(const TrainOptions& o, int64_t step, int64_t total_steps, const Dataset& data,
                      const std::vector<size_t>& order, size_t b0, size_t b1, int32_t pad_id, TrainPass& pass,
                      Trainable& tr, Optimizer& optimizer, StepGrads& sg) {
  StepResult r;
  int64_t step_targets = 0;
  for (size_t i = b0; i < b1; ++i) {
    step_targets += target_count(data.examples[order[i]]);
    r.tokens += static_cast<int64_t>(data.examples[order[i]].input_ids.size());
  }
  const size_t mb = static_cast<size_t>(o.micro_batch);
  // A last step of fewer sequences has fewer micro-batches; the shares stay contiguous.
  const dist::Share mine = dist::my_share(static_cast<int64_t>((b1 - b0 + mb - 1) / mb));
  const bool folds_in_place = dist::rank() == 0;
  sg.acc.assign(static_cast<size_t>(tr.grad_floats()), 0.0f);
  sg.held.resize(folds_in_place ? 0 : static_cast<size_t>(mine.end - mine.begin));
  std::vector<double> losses;  // this rank's sequences, in data order
  for (int64_t micro = mine.begin; micro < mine.end; ++micro) {
    const size_t m0 = b0 + static_cast<size_t>(micro) * mb;
    const std::vector<size_t> idx(order.begin() + static_cast<int64_t>(m0),
                                  order.begin() + static_cast<int64_t>(std::min(b1, m0 + mb)));
    const Batch b = make_batch(data.examples, idx, pad_id);
    pass.set_dropout(
        o.dropout, o.seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(step) * 1024 + static_cast<uint64_t>(micro));
    tr.zero_grads();
    pass.run(TrainBatch{b.B, b.T, b.tokens.data(), b.targets.data()}, true, 1.0f / static_cast<float>(step_targets));
    losses.insert(losses.end(), pass.sequence_losses().begin(), pass.sequence_losses().end());
    if (folds_in_place)
      tr.add_grads_to(sg.acc);
    else
      tr.copy_grads_to(sg.held[static_cast<size_t>(micro - mine.begin)]);
  }
  dist::barrier();  // the wait for the slowest rank, apart from the sum's own time
  const dist::CommStats comm0 = dist::comm_stats();
  dist::ordered_fold(sg.acc.data(), static_cast<int64_t>(sg.acc.size()), [&](float* acc, int64_t e0, int64_t e1) {
    for (const std::vector<float>& g : sg.held)
      for (int64_t i = e0; i < e1; ++i) acc[i] += g[static_cast<size_t>(i)];
  });
  tr.set_grads(sg.acc);
  double loss_sum = 0;
  for (double l : dist::allgather_values(losses)) loss_sum += l;  // data order: --micro-batch does not change it
  const dist::CommStats comm1 = dist::comm_stats();
  r.comm_s = comm1.seconds - comm0.seconds;
  r.wait_s = comm1.wait_seconds - comm0.wait_seconds;
  r.loss = loss_sum / static_cast<double>(step_targets);
  r.grad_norm = clip_grad_norm(tr.slots, o.clip_norm);
  if (!std::isfinite(r.loss) || !std::isfinite(r.grad_norm))
    fail("training diverged at step {}: loss {}, gradient norm {} (lower --lr, or set --clip-norm)", step + 1, r.loss,
         r.grad_norm);
  r.lr = learning_rate(o.schedule, o.lr, step, o.warmup_steps, total_steps);
  optimizer.step(r.lr);
  return r;
}

// The ranks of a run must agree on everything that decides the trajectory:
// their options and their copy of the data (each host reads its own). Each
// rank's description is gathered and compared with rank 0's.
void check_ranks_agree(const Json& trajectory, const Dataset& data, const Dataset& eval_data) {
  if (dist::size() == 1) return;
  auto digest = [](const Dataset& d) {
    uint64_t h = 1469598103934665603ull;  // FNV-1a over every token and label
    auto mix = [&h](int32_t v) {
      for (int k = 0; k < 4; ++k) h = (h ^ ((static_cast<uint32_t>(v) >> (8 * k)) & 0xff)) * 1099511628211ull;
    };
    for (const Example& e : d.examples) {
      mix(static_cast<int32_t>(e.input_ids.size()));
      for (int32_t t : e.input_ids) mix(t);
      for (int32_t t : e.labels) mix(t);
    }
    return fmt::format("{} examples, digest {:016x}", d.examples.size(), h);
  };
  Json mine = trajectory;
  mine["data (as read)"] = digest(data);
  mine["eval_data (as read)"] = digest(eval_data);
  const std::vector<std::string> all = dist::allgather(mine.dump());
  const Json first = Json::parse(all[0]);
  for (size_t r = 1; r < all.size(); ++r) {
    const Json other = Json::parse(all[r]);
    for (auto it = first.begin(); it != first.end(); ++it)
      if (!other.contains(it.key()) || other.at(it.key()) != it.value())
        fail("rank {} has {} = {}, rank 0 has {} = {}: every rank of a run needs the same options and data", r,
             it.key(), other.contains(it.key()) ? other.at(it.key()).dump() : "(none)", it.key(), it.value().dump());
  }
}

// N ranks split every step's micro-batches evenly: N must divide them.
void check_ranks_divide(const TrainOptions& o) {
  const int ranks = dist::size();
  const int64_t micros = (o.batch + o.micro_batch - 1) / o.micro_batch;
  if (micros % ranks == 0) return;
  std::string fits;
  for (int64_t k = 1; k <= micros; ++k)
    if (micros % k == 0) fits += fmt::format("{}{}", fits.empty() ? "" : ", ", k);
  fail(
      "{} ranks (mpirun -np {}): expected a number of ranks that divides the {} micro-batches of a step (--batch {} "
      "/ --micro-batch {}): {}",
      ranks, ranks, micros, o.batch, o.micro_batch, fits);
}

}  // namespace

std::vector<ParamSlot> adapter_slots(Adapter& values, Adapter& grads) {
  std::vector<ParamSlot> slots;
  for (size_t l = 0; l < values.layers.size(); ++l)
    for (Target t : kAllTargets)
      for (char which : {'A', 'B', 'C'}) {
        AdapterMatrix& v = values.layers[l].matrix(t, which);
        if (v.empty()) continue;
        slots.push_back({Adapter::tensor_name(values.config, static_cast<int64_t>(l), t, which), v.data.data(),
                         grads.layers[l].matrix(t, which).data.data(), static_cast<int64_t>(v.data.size()), true});
      }
  return slots;
}

std::vector<ParamSlot> dense_slots(DenseWeights& values, DenseWeights& grads) {
  std::vector<ParamSlot> slots;
  for (size_t i = 0; i < values.specs.size(); ++i)
    slots.push_back({values.specs[i].name, values.data[i].data(), grads.data[i].data(),
                     static_cast<int64_t>(values.data[i].size()), values.specs[i].shape.size() == 2});
  return slots;
}

TrainSummary run_training(const TrainOptions& opts) {
  check_options(opts);
  TrainOptions o = opts;
  if (o.micro_batch == 0) o.micro_batch = o.batch;
  const double t_start = now_seconds();

  auto model = LlamaModel::load(o.model_dir);
  const LlamaConfig& cfg = model->config();
  if (o.full && is_gguf_path(o.model_dir))
    fail(
        "{}: --full on a GGUF file: full fine-tuning writes a model directory with the base's tokenizer.json; "
        "fine-tune a model directory, or train an adapter on the GGUF",
        o.model_dir);
  // Training data is tokenised with the model's tokenizer.
  const Tokenizer tokenizer = load_model_tokenizer(o.model_dir);
  DataOptions data_options;
  data_options.seq_len = o.seq_len;
  data_options.skip_bad = o.skip_bad;
  data_options.format = o.format;
  // Under mpirun every rank reads the model and data itself; rank 0 alone
  // speaks, and alone reads and writes --out (it need not exist elsewhere).
  const bool lead = dist::rank() == 0;
  check_ranks_divide(o);
  const Dataset data = load_jsonl(o.data_path, tokenizer, data_options);
  if (lead) std::fprintf(stderr, "train: %s: %s\n", o.data_path.c_str(), data.stats.summary().c_str());
  for (const std::string& m : data.stats.skip_messages)
    if (lead) std::fprintf(stderr, "  skipped %s\n", m.c_str());
  Dataset eval_data;
  if (!o.eval_data_path.empty()) {
    eval_data = load_jsonl(o.eval_data_path, tokenizer, data_options);
    if (lead)
      std::fprintf(stderr, "train: %s (validation): %s\n", o.eval_data_path.c_str(), eval_data.stats.summary().c_str());
  }
  const int32_t pad_id = tokenizer.eos_ids().empty() ? 0 : static_cast<int32_t>(tokenizer.eos_ids()[0]);

  // What is trained.
  Trainable tr;
  if (o.full) {
    tr.dense = std::make_unique<DenseWeights>(DenseWeights::from_model(*model));
    tr.dense_grads = std::make_unique<DenseWeights>(DenseWeights::zeros(cfg));
    tr.grads_view = tr.dense_grads->train_grads();
  } else {
    const AdapterConfig ac = adapter_config_of(o, cfg);
    tr.adapter = std::make_unique<Adapter>(o.adapter_init.empty() ? Adapter::create(ac, cfg, o.seed)
                                                                  : Adapter::load(o.adapter_init, cfg));
    tr.adapter_grads = std::make_unique<Adapter>(tr.adapter->zeros_like());
  }
  tr.make_slots();
  Optimizer optimizer(o.optim, tr.slots);

  const int threads = o.threads > 0 ? o.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  ThreadPool pool(threads);
  const int64_t longest = [&] {
    size_t m = 1;
    for (const Example& e : data.examples) m = std::max(m, e.input_ids.size());
    for (const Example& e : eval_data.examples) m = std::max(m, e.input_ids.size());
    return static_cast<int64_t>(m);
  }();
  const WeightsView weights = o.full ? tr.dense->train_weights() : weights_view_of(*model);
  const auto adapter_view = make_adapter_train_view(tr.adapter.get(), tr.adapter_grads.get());
  MemoryEstimate estimate;
  estimate.weights = static_cast<int64_t>(model->weight_bytes()) +
                     (o.full ? static_cast<int64_t>(sizeof(float)) * cfg.parameter_count() : 0);
  const int64_t moments = o.optim.kind == OptimizerKind::AdamW ? 2 : 0;
  estimate.trainable = static_cast<int64_t>(sizeof(float)) * tr.parameter_count() * (1 + moments + (o.full ? 0 : 1));
  estimate.pass = train_pass_bytes(cfg, o.micro_batch, longest, o.full ? 0 : tr.adapter->config.rank, o.full, threads);
  check_memory(o, cfg, estimate, longest, threads, lead);
  TrainPass pass(cfg, pool, weights, o.full ? &tr.grads_view : nullptr, adapter_view ? &*adapter_view : nullptr,
                 o.micro_batch * longest);

  const int64_t n = static_cast<int64_t>(data.examples.size());
  const int64_t steps_per_epoch = (n + o.batch - 1) / o.batch;
  const int64_t total_steps = o.max_steps > 0 ? o.max_steps : o.epochs * steps_per_epoch;

  const std::string log_path = o.out_dir + "/train_log.jsonl";
  const Json trajectory = trajectory_json(o);
  check_ranks_agree(trajectory, data, eval_data);
  StartPoint start;
  if (lead) {
    make_directories(o.out_dir);
    if (o.resume)
      start = resume(o, trajectory, total_steps, cfg, tr, optimizer, log_path);
    else
      start_fresh(o.out_dir, log_path);
  }
  if (o.resume) {  // rank 0 read the checkpoint: its values, moments and step go to every rank
    dist::broadcast_value(start.step, 0);
    dist::broadcast_value(start.logged_loss, 0);
    tr.broadcast_values(0);
    for (std::vector<float>* b : optimizer.state_buffers())
      dist::broadcast(b->data(), static_cast<int64_t>(b->size() * sizeof(float)), 0);
    int64_t optimizer_steps = optimizer.step_count();
    dist::broadcast_value(optimizer_steps, 0);
    optimizer.set_step_count(optimizer_steps);
  }
  int64_t step = start.step;
  const int64_t first_step = step;
  Json config_json = trajectory;
  config_json["eval_data"] = o.eval_data_path;
  config_json["threads"] = threads;
  if (dist::size() > 1) config_json["ranks"] = dist::size();
  config_json["trainable_parameters"] = tr.parameter_count();
  config_json["total_steps"] = total_steps;
  if (lead) write_file_atomic(o.out_dir + "/train_config.json", config_json.dump(2) + "\n");

  // Every line is checked as it is written (a full disk ends the run here,
  // naming the log); a line cut short by a crash is dropped at --resume.
  std::optional<AppendFile> log;
  if (lead) log.emplace(log_path);
  auto log_line = [&](const Json& j) {
    if (log) log->write(j.dump() + "\n");
  };
  const int64_t die_in_checkpoint = test_hook("FLORA_TEST_DIE_IN_CHECKPOINT");
  const bool die_in_result = test_hook("FLORA_TEST_DIE_IN_RESULT") > 0;

  if (lead)
    std::fprintf(
        stderr,
        "train: %s, %lld trainable parameters (%.3f%% of %lld), %lld examples, %lld steps of %lld "
        "sequences (micro-batch %lld), %d threads%s\n",
        o.full ? "full fine-tuning" : tr.adapter->config.variant.c_str(), static_cast<long long>(tr.parameter_count()),
        100.0 * static_cast<double>(tr.parameter_count()) / static_cast<double>(cfg.parameter_count()),
        static_cast<long long>(cfg.parameter_count()), static_cast<long long>(n), static_cast<long long>(total_steps),
        static_cast<long long>(o.batch), static_cast<long long>(o.micro_batch), threads,
        dist::size() > 1 ? fmt::format(" on each of {} ranks (MPI)", dist::size()).c_str() : "");

  const bool quiet = o.quiet || !lead;
  const bool tty = !quiet && ::isatty(2);
  TrainSummary summary;
  summary.trainable = tr.parameter_count();
  auto validate = [&](int64_t at_step) {
    if (eval_data.examples.empty()) return;
    const double loss = evaluate(pass, eval_data, o.micro_batch, pad_id);
    summary.eval_loss = loss;
    Json j;
    j["step"] = at_step;
    j["eval_loss"] = loss;
    j["eval_ppl"] = std::exp(loss);
    log_line(j);
    if (lead)
      std::fprintf(stderr, "%svalidation at step %lld: loss %.4f, perplexity %.2f\n", tty ? "\r\033[K" : "",
                   static_cast<long long>(at_step), loss, std::exp(loss));
  };
  // The checkpoint `latest` names is never written over: a run resumed at its
  // last step has it already and writes no new one.
  auto checkpoint = [&](int64_t at_step) {
    if (!lead || (at_step == first_step && start.dir == o.out_dir + "/" + checkpoint_name(at_step))) return;
    write_checkpoint(o, at_step, total_steps, trajectory, tr, optimizer, *log, die_in_checkpoint);
  };

  if (step == 0) validate(0);
  Progress progress("step", total_steps);
  int64_t tokens_done = 0;
  const double t_loop = now_seconds();
  std::vector<size_t> order;
  int64_t order_epoch = -1;
  StepGrads step_grads;
  const dist::CommStats comm_start = dist::comm_stats();
  while (step < total_steps) {
    const int64_t epoch = step / steps_per_epoch, k = step % steps_per_epoch;
    if (epoch != order_epoch)
      order = epoch_order(static_cast<size_t>(n), o.seed, static_cast<uint64_t>(epoch)), order_epoch = epoch;
    const size_t b0 = static_cast<size_t>(k * o.batch), b1 = std::min(order.size(), b0 + static_cast<size_t>(o.batch));
    const StepResult r = train_step(o, step, total_steps, data, order, b0, b1, pad_id, pass, tr, optimizer, step_grads);
    ++step;
    tokens_done += r.tokens;
    const double elapsed = now_seconds() - t_loop;
    const double tps = static_cast<double>(tokens_done) / std::max(elapsed, 1e-9);
    if (step == first_step + 1) summary.first_loss = r.loss;
    summary.last_loss = r.loss;
    Json j;
    j["step"] = step;
    j["epoch"] = static_cast<double>(step) / static_cast<double>(steps_per_epoch);
    j["loss"] = r.loss;
    j["lr"] = r.lr;
    j["grad_norm"] = r.grad_norm;
    j["tokens"] = r.tokens;
    j["tokens_per_s"] = tps;
    j["elapsed_s"] = now_seconds() - t_start;
    if (dist::size() > 1) j["comm_s"] = r.comm_s, j["wait_s"] = r.wait_s;
    log_line(j);
    if (!quiet) progress.update(step, fmt::format("loss {:.4f}  lr {:.2e}  {:.0f} tok/s", r.loss, r.lr, tps));
    if (o.eval_every > 0 && step % o.eval_every == 0 && step < total_steps) validate(step);
    if (o.save_every > 0 && step % o.save_every == 0 && step < total_steps) checkpoint(step);
  }
  if (step == first_step) summary.first_loss = summary.last_loss = start.logged_loss;
  if (!quiet) progress.finish(fmt::format("loss {:.4f}", summary.last_loss));
  const dist::CommStats comm_end = dist::comm_stats();
  summary.comm_seconds = comm_end.seconds - comm_start.seconds;
  summary.wait_seconds = comm_end.wait_seconds - comm_start.wait_seconds;
  summary.comm_bytes = comm_end.bytes_sent - comm_start.bytes_sent;
  summary.train_steps = step - first_step;
  validate(step);
  checkpoint(step);
  const std::string result = lead ? write_result(o, tr, die_in_result) : o.out_dir + (o.full ? "/model" : "/adapter");

  summary.steps = step;
  summary.seconds = now_seconds() - t_start;
  summary.tokens_per_s = static_cast<double>(tokens_done) / std::max(now_seconds() - t_loop, 1e-9);
  summary.peak_rss_bytes = peak_rss_bytes();
  summary.result_dir = result;
  return summary;
}

}  // namespace flora::train
