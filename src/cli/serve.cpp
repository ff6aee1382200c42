// flora serve: the OpenAI-compatible server. One base model, any number of
// named adapters (LoRA and every FLoRA variant), each request running the
// adapter its `model` names; requests of different adapters share each step.
#include <pthread.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli/commands.h"
#include "model/forward.h"
#include "model/generate.h"
#include "model/gguf_llama.h"
#include "serve/adapter_loader.h"
#include "serve/http_server.h"
#include "serve/metrics.h"
#include "serve/openai.h"
#include "serve/scheduler.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace flora::cli {

namespace {

// The name a directory goes by: its last component ("models/tiny/" -> "tiny").
std::string dir_name(const std::string& dir) {
  std::filesystem::path p = std::filesystem::path(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  std::string name = p.filename().string();
  return name.empty() || name == "." || name == ".." ? std::filesystem::absolute(p).filename().string() : name;
}

}  // namespace

void add_serve(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("serve", "Serve the model and adapters over the OpenAI HTTP API");
  struct Options {
    std::string model, host = "127.0.0.1", api_key, lora_variant = "lora", adapter_dir;
    std::vector<std::string> adapters;
    int port = 8080, parallel = 4, threads = 1;
    int64_t ctx = 0, queue = 16, max_prefill = 512;
    double grace = 10, keep_alive = 1;
    size_t max_body = 4 << 20;
    ModelLoadOptions load;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("-m,--model", o->model, "Model directory (config.json, safetensors, tokenizer.json) or .gguf file")
      ->required();
  cmd->add_option("--adapter", o->adapters,
                  "NAME=DIR: an adapter that requests name as their `model` (repeatable; DIR alone: named after "
                  "the directory)");
  cmd->add_option("--adapter-dir", o->adapter_dir,
                  "Allow POST /v1/load_lora_adapter and /v1/unload_lora_adapter, for adapters inside DIR only");
  cmd->add_option("--lora-variant", o->lora_variant, "How LoRA adapters run: lora (unfused, as PEFT) or pf-lora")
      ->capture_default_str();
  cmd->add_option("--host", o->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", o->port, "Port (0: any free one; the one bound is printed)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  cmd->add_option("--parallel", o->parallel, "Requests generating at once (KV-cache slots)")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  cmd->add_option("--ctx", o->ctx, "Positions per slot, prompt and generated tokens (default: 2048 or the model's)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--queue", o->queue, "Requests waiting for a slot; more get 503")
      ->check(CLI::Range(0, 4096))
      ->capture_default_str();
  cmd->add_option("--max-prefill-tokens", o->max_prefill, "Prompt tokens run in one step")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--api-key", o->api_key, "Require 'Authorization: Bearer KEY' on every route but /health");
  cmd->add_option("--shutdown-grace", o->grace,
                  "Seconds that requests in flight get to finish after SIGINT/SIGTERM; then they end with "
                  "finish_reason length")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  cmd->add_option("--keep-alive", o->keep_alive,
                  "Seconds between the writes of a response still waiting for its tokens (an SSE comment, or a "
                  "space before a whole JSON body), by which a client that went away is noticed and its request "
                  "cancelled")
      ->check(CLI::Range(0.01, 60.0))
      ->capture_default_str();
  cmd->add_option("--max-body-bytes", o->max_body, "Largest request body (larger: 413)")
      ->check(CLI::Range(size_t{1024}, size_t{1} << 30))
      ->capture_default_str();
  add_model_load_options(cmd, o->load);
  add_threads_option(cmd, o->threads);
  cmd->callback([&action, o] {
    action = [o] {
      if (o->lora_variant == "lora-merged") fail("--lora-variant lora-merged: {}", serve::merged_lora_refusal());
      const auto execution = lora_execution_of(o->lora_variant);
      if (!execution) fail("--lora-variant: expected lora or pf-lora, found '{}'", o->lora_variant);

      // SIGINT and SIGTERM are taken by sigwait below, never by a handler: every
      // thread started from here on inherits the mask.
      sigset_t signals;
      sigemptyset(&signals);
      sigaddset(&signals, SIGINT);
      sigaddset(&signals, SIGTERM);
      pthread_sigmask(SIG_BLOCK, &signals, nullptr);
      std::signal(SIGPIPE, SIG_IGN);  // a client gone mid-write is an error return, not death

      auto model = load_model(o->model, o->load);
      const LlamaConfig& cfg = model->config();
      const Tokenizer tok = load_model_tokenizer(o->model);
      const int64_t ctx = o->ctx ? o->ctx : std::min<int64_t>(2048, cfg.max_position_embeddings);
      if (ctx < 2 || ctx > cfg.max_position_embeddings)
        fail("--ctx {}: expected 2 to the model's context, {} (max_position_embeddings in {}/config.json)", ctx,
             cfg.max_position_embeddings, o->model);

      serve::ModelRegistry registry(dir_name(o->model));
      std::vector<std::unique_ptr<AttachedAdapter>> attached;
      for (const std::string& spec : o->adapters) {
        const size_t eq = spec.find('=');
        const std::string name = eq == std::string::npos ? dir_name(spec) : spec.substr(0, eq);
        const std::string dir = eq == std::string::npos ? spec : spec.substr(eq + 1);
        if (name.empty() || dir.empty()) fail("--adapter '{}': expected NAME=DIR", spec);
        if (!std::filesystem::exists(dir))
          fail("--adapter {}: {}: no such adapter directory (or llama.cpp GGUF LoRA file)", name, dir);
        Adapter adapter = Adapter::load(dir, cfg);
        auto a = std::make_unique<AttachedAdapter>(*model, std::move(adapter), *execution);
        if (!a->exec())
          fail(
              "--adapter {}: {} runs merged into the base weights, which every request shares: it cannot be "
              "served per request",
              name, dir);
        registry.add_adapter(name, serve::unowned(a->exec()), a->variant(), "--adapter", dir);
        std::fprintf(stderr, "adapter: %s = %s (%s, rank %lld, lora id %lld)\n", name.c_str(), dir.c_str(),
                     a->variant().c_str(), static_cast<long long>(a->adapter().config.rank),
                     static_cast<long long>(registry.find(name)->lora_id));
        attached.push_back(std::move(a));
      }

      serve::Metrics metrics;
      for (const auto& m : registry.models()) metrics.add_model(m->id);
      // Adapters it loads are owned by the registry and the requests that name
      // them, both of which end before the model does.
      serve::AdapterLoader loader(*model, *execution, o->adapter_dir, registry, &metrics);

      ThreadPool pool(o->threads);
      Forward forward(*model, pool, ctx, nullptr, nullptr, o->parallel);
      serve::SchedulerOptions so;
      so.max_queue = o->queue;
      so.max_prefill_tokens = o->max_prefill;
      serve::Scheduler scheduler(forward, tok, so);
      serve::ApiContext api{&registry, &tok, stop_token_ids(cfg, tok), ctx, cfg.vocab_size};
      serve::HttpOptions ho;
      ho.host = o->host;
      ho.port = o->port;
      ho.api_key = o->api_key;
      ho.max_body_bytes = o->max_body;
      ho.keep_alive = std::chrono::milliseconds(static_cast<int64_t>(o->keep_alive * 1000));
      // A connection per request in a slot or queued, and a few to answer
      // the rest (503) and /health; capped, since each is a thread.
      ho.threads = std::min(o->parallel + static_cast<int>(o->queue) + 4, 512);
      serve::HttpServer http(scheduler, api, ho, &metrics, &loader);
      const int port = http.bind();
      scheduler.start();
      http.start();
      std::fprintf(stderr,
                   "flora serve: listening on http://%s:%d (model %s, %zu adapters, %d slots of %lld positions, %d "
                   "threads)\n",
                   o->host.c_str(), port, registry.base().id.c_str(), attached.size(), o->parallel,
                   static_cast<long long>(ctx), o->threads);
      std::fflush(stderr);

      int sig = 0;
      sigwait(&signals, &sig);
      std::fprintf(stderr, "flora serve: %s: no new requests; %lld running and %lld queued get %.0f s to finish\n",
                   sig == SIGINT ? "SIGINT" : "SIGTERM", static_cast<long long>(scheduler.running()),
                   static_cast<long long>(scheduler.queued()), o->grace);
      std::fflush(stderr);
      const auto grace = std::chrono::milliseconds(static_cast<int64_t>(o->grace * 1000));
      scheduler.stop(grace);  // every request ends by the grace's end
      // The streams then write their last events; a client that stopped
      // reading does not hold the exit for more than a few seconds.
      http.stop(std::chrono::seconds(5));
      std::fprintf(stderr, "flora serve: stopped after %llu steps\n",
                   static_cast<unsigned long long>(scheduler.steps()));
    };
  });
}

}  // namespace flora::cli
