// flora generate, flora logits, flora tokenize: running a model directory.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "io/safetensors.h"
#include "model/forward.h"
#include "model/generate.h"
#include "model/gguf_llama.h"
#include "model/weights.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/file.h"
#include "util/json.h"
#include "util/timer.h"

namespace flora::cli {

namespace {

// fwrite, not fputs: decoded text may hold NUL bytes.
void print(const std::string& text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
}

std::string read_prompt(const std::string& prompt, const std::string& prompt_file) {
  if (!prompt_file.empty()) return read_file(prompt_file);
  return prompt;
}

}  // namespace

void add_generate(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("generate", "Generate text from a prompt, streaming tokens as they come");
  struct Options {
    std::string model, prompt, prompt_file, adapter, lora_variant;
    bool chat = false, ignore_eos = false;
    ModelLoadOptions load;
    int64_t n = 128;
    int threads = 1;
    SamplerParams sampling;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("-m,--model", o->model, "Model directory (config.json, safetensors, tokenizer.json) or .gguf file")
      ->required();
  auto* p = cmd->add_option("-p,--prompt", o->prompt, "Prompt text");
  auto* pf = cmd->add_option("-f,--prompt-file", o->prompt_file, "File holding the prompt")->check(CLI::ExistingFile);
  p->excludes(pf);
  cmd->add_flag("--chat", o->chat, "Wrap the prompt as a user message in the Llama 3 chat template");
  cmd->add_option("-n,--n-predict", o->n, "Most tokens to generate (clipped to the room the context leaves)")
      ->check(token_count_check())
      ->capture_default_str();
  cmd->add_option("--temp", o->sampling.temperature, "Temperature (0: greedy)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--top-k", o->sampling.top_k, "Keep the k most likely tokens (0: all)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--top-p", o->sampling.top_p, "Keep the smallest set of tokens whose probability reaches p")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--seed", o->sampling.seed, "Sampling seed")->capture_default_str();
  cmd->add_flag("--ignore-eos", o->ignore_eos, "Do not stop at end-of-sequence tokens");
  add_model_load_options(cmd, o->load);
  add_adapter_options(cmd, o->adapter, o->lora_variant);
  add_threads_option(cmd, o->threads);
  cmd->callback([&action, o, p, pf] {
    if (!*p && !*pf) throw CLI::RequiredError("--prompt or --prompt-file");
    action = [o] {
      auto model = load_model(o->model, o->load);
      const Tokenizer tok = load_model_tokenizer(o->model);
      std::string text = read_prompt(o->prompt, o->prompt_file);
      std::vector<int32_t> prompt;
      if (o->chat)
        prompt = tok.encode(apply_chat_template({{"user", text}}, true), false, true);
      else
        prompt = tok.encode(text, tok.bos_id().has_value(), true);
      const LlamaConfig& cfg = model->config();
      const int64_t prompt_tokens = static_cast<int64_t>(prompt.size());
      if (prompt.empty()) fail("the prompt has no tokens (empty text, and the tokenizer has no begin-of-text token)");
      if (prompt_tokens >= cfg.max_position_embeddings)
        fail("the prompt has {} tokens; the model's context is {} (no room for a generated token)", prompt.size(),
             cfg.max_position_embeddings);
      // -n may be anything up to INT64_MAX: it is clipped to the room the
      // context leaves, never added to the prompt's length unclipped.
      const int64_t room = cfg.max_position_embeddings - prompt_tokens;
      const int64_t n = std::min(o->n, room);
      if (n < o->n)
        std::fprintf(stderr,
                     "flora generate: -n %lld: the context (%lld) leaves room for %lld tokens after the "
                     "prompt's %lld; generating at most %lld\n",
                     static_cast<long long>(o->n), static_cast<long long>(cfg.max_position_embeddings),
                     static_cast<long long>(room), static_cast<long long>(prompt_tokens), static_cast<long long>(n));
      const int64_t context = prompt_tokens + n;
      ThreadPool pool(o->threads);
      const auto adapter = attach_adapter(*model, o->adapter, o->lora_variant);
      Forward forward(*model, pool, context, adapter ? adapter->exec() : nullptr,
                      adapter ? adapter->layers() : nullptr);
      Sampler sampler(o->sampling);
      StreamDecoder decoder(tok, /*skip_special=*/false);
      print(text);
      const GenerationStats s =
          generate(forward, prompt, n, sampler, o->ignore_eos ? std::vector<int32_t>{} : stop_token_ids(cfg, tok),
                   [&](int32_t id) { print(decoder.push(id)); });
      print(decoder.flush() + "\n");
      std::fprintf(stderr,
                   "\nprompt: %lld tokens, TTFT %.1f ms (%.1f tokens/s) | generated: %lld tokens%s, TPOT %.1f ms "
                   "(median, %.1f tokens/s) | %d threads\n",
                   static_cast<long long>(s.prompt_tokens), s.ttft_s * 1e3, s.prompt_tokens / s.ttft_s,
                   static_cast<long long>(s.generated_tokens), s.stopped ? " (stopped at EOS)" : "", s.tpot_s() * 1e3,
                   s.tpot_s() > 0 ? 1.0 / s.tpot_s() : 0.0, o->threads);
    };
  });
}

void add_logits(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("logits", "Write the logits of every position of a token sequence (safetensors)");
  struct Options {
    std::string model, tokens, out, adapter, lora_variant;
    int threads = 1;
    ModelLoadOptions load;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("-m,--model", o->model, "Model directory")->required();
  add_adapter_options(cmd, o->adapter, o->lora_variant);
  cmd->add_option("--tokens", o->tokens, "Token ids, comma-separated: 128000,9906,1917")->required();
  cmd->add_option("-o,--out", o->out, "Output .safetensors: one F32 tensor 'logits' (tokens, vocab)")->required();
  add_threads_option(cmd, o->threads);
  add_model_load_options(cmd, o->load);
  cmd->callback([&action, o] {
    action = [o] {
      const auto ids = parse_token_list(o->tokens, "--tokens");
      auto model = load_model(o->model, o->load);
      check_fits_context(*model, "--tokens", static_cast<int64_t>(ids.size()));
      ThreadPool pool(o->threads);
      const int64_t T = static_cast<int64_t>(ids.size()), V = model->config().vocab_size;
      const auto adapter = attach_adapter(*model, o->adapter, o->lora_variant);
      Forward forward(*model, pool, T, adapter ? adapter->exec() : nullptr, adapter ? adapter->layers() : nullptr);
      const float* logits = forward.forward(ids.data(), T, true);
      write_safetensors(o->out, {{"logits", DType::F32, {T, V}, logits}}, {{"tokens", o->tokens}});
      std::fprintf(stderr, "logits: wrote (%lld, %lld) to %s\n", static_cast<long long>(T), static_cast<long long>(V),
                   o->out.c_str());
    };
  });
}

void add_tokenize(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("tokenize", "Print the token ids of a text as a JSON array (or decode ids)");
  struct Options {
    std::string model, text, file;
    bool decode = false, no_bos = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("-m,--model", o->model, "Model directory (or a directory holding tokenizer.json)")->required();
  auto* t = cmd->add_option("--text", o->text, "Text to tokenize (with --decode: a JSON array of ids)");
  auto* f = cmd->add_option("--file", o->file, "File to tokenize (with --decode: holding a JSON array of ids)")
                ->check(CLI::ExistingFile);
  t->excludes(f);
  cmd->add_flag("--decode", o->decode, "Decode ids to text instead");
  cmd->add_flag("--no-bos", o->no_bos, "Do not prepend the beginning-of-text token");
  cmd->callback([&action, o, t, f] {
    if (!*t && !*f) throw CLI::RequiredError("--text or --file");
    action = [o] {
      const Tokenizer tok = load_model_tokenizer(o->model);
      const std::string input = o->file.empty() ? o->text : read_file(o->file);
      if (o->decode) {
        const std::string origin = o->file.empty() ? "--text" : o->file;
        const Json j = parse_json(input, origin);
        if (!j.is_array()) fail("{}: expected a JSON array of token ids", origin);
        std::vector<int32_t> ids;
        for (const auto& e : j) {
          if (!e.is_number_integer())
            fail("{}: item {}: expected an integer token id, found {}", origin, ids.size() + 1, e.dump());
          ids.push_back(e.get<int32_t>());
        }
        print(tok.decode(ids) + "\n");
        return;
      }
      const auto ids = tok.encode(input, !o->no_bos && tok.bos_id().has_value(), true);
      std::fputs(Json(ids).dump().c_str(), stdout);
      std::fputs("\n", stdout);
    };
  });
}

}  // namespace flora::cli
