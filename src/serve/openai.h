// The OpenAI API as data: request bodies of /v1/completions and
// /v1/chat/completions parsed and checked into scheduler requests, and the
// JSON of responses, stream chunks (server-sent events) and errors. No
// sockets: the HTTP layer (serve/http_server.h) only moves these strings.
//
// The request's `model` names what runs it (vLLM's convention): the base
// model's id (its directory's name) or an adapter's name. llama-server's
// convention works too: a request's `lora` list [{"id", "scale"}] picks the
// adapter by id and scales it, and requests that name neither run the
// defaults that POST /lora-adapters sets.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "model/adapter_exec.h"
#include "serve/scheduler.h"
#include "tokenizer/tokenizer.h"
#include "util/json.h"

namespace flora::serve {

// A request the API refuses: its HTTP status and OpenAI's error object
// {"error": {"message", "type", "param", "code"}}.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, const std::string& message, std::string type = "invalid_request_error", std::string param = "",
           std::string code = "")
      : std::runtime_error(message),
        status(status),
        type(std::move(type)),
        param(std::move(param)),
        code(std::move(code)) {}
  int status;
  std::string type, param, code;  // param, code: empty is JSON null
};
Json error_json(const ApiError& error);

// Dumps JSON text; text that is not valid UTF-8 (a token may decode to part
// of a character) gets U+FFFD instead of failing.
std::string dump_json(const Json& j);

// What a request's `model` can name.
struct ServedModel {
  std::string id;
  // Null: the base model. Owns what it points into (an adapter loaded at run
  // time) or aliases one that outlives the server (no owner).
  std::shared_ptr<const AdapterExec> adapter;
  std::string variant;  // "base", "ffba", "lora", ...
  std::string path;     // the adapter's directory, as given (GET /lora-adapters); empty for the base
  // llama-server's adapter id: given in the order adapters are added, never
  // reused, so that an id a client holds never names another adapter. -1: the base.
  int64_t lora_id = -1;
};

// What a llama-server `lora` list comes to: the model that runs the request
// and the scale of its adapter. A list names adapters by id with a scale each,
// and every adapter it does not name gets 0 (llama-server's rule). A row of
// the batch carries one adapter, so at most one may have a non-zero scale;
// with none, the base runs.
struct LoraChoice {
  std::shared_ptr<const ServedModel> model;
  // The adapter's own s times the list's scale (llama-server's scale
  // multiplies alpha / r); unset: the base, or no list.
  std::optional<float> scale;
};

// The served models. Thread-safe: HTTP threads read it for every request
// while adapters are loaded and unloaded at run time. A lookup hands out
// shared ownership, so an adapter removed here lives on in the requests that
// already named it (RequestParams::keep_alive) and is freed after the last.
class ModelRegistry {
 public:
  explicit ModelRegistry(std::string base_id);
  // Fails on an empty name or one already taken (the base's included);
  // `source` names where the name came from in the message ("--adapter").
  void add_adapter(const std::string& name, std::shared_ptr<const AdapterExec> adapter, const std::string& variant,
                   const std::string& source = "--adapter", const std::string& path = "");
  // Removes an adapter; false when no adapter has that name (the base is
  // never removed).
  bool remove_adapter(const std::string& name);
  std::shared_ptr<const ServedModel> find(std::string_view id) const;  // nullptr when unknown
  const ServedModel& base() const { return *base_; }
  const std::shared_ptr<const ServedModel>& base_ptr() const { return base_; }
  // A snapshot: the base first, then the adapters in the order added.
  std::vector<std::shared_ptr<const ServedModel>> models() const;
  // The body of GET /v1/models: the base, then each adapter with `parent` the base.
  Json list_json(int64_t created) const;
  static Json model_json(const ServedModel& m, const std::string& base_id, int64_t created);

  // Checks a `lora` list ([{"id": INT, "scale": NUMBER}], `param` naming it in
  // messages) against the adapters served now. Throws ApiError 400: not an
  // array of such objects, an unknown or repeated id, a scale that is not
  // finite or beyond +-kMaxLoraScale, non-zero scales for two adapters.
  LoraChoice choose_lora(const Json& list, const std::string& param) const;
  // POST /lora-adapters: the list becomes what requests naming neither an
  // adapter nor a `lora` list run. Before any call, and after the chosen
  // adapter is unloaded, that is the base (as llama-server's
  // --lora-init-without-apply: several adapters at scale 1 could not share a row).
  void set_lora_defaults(const Json& list);
  LoraChoice lora_defaults() const;
  // GET /lora-adapters: [{"id", "path", "scale", "name", "variant"}], scale the default's.
  Json lora_adapters_json() const;
  static constexpr double kMaxLoraScale = 100;

 private:
  const std::shared_ptr<const ServedModel> base_;
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<const ServedModel>> models_;  // the base first
  int64_t next_lora_id_ = 0;
  // The default adapter's id and list scale; unset: the base.
  std::optional<std::pair<int64_t, double>> default_lora_;
};

// An adapter that the caller keeps alive for as long as the registry and the
// scheduler run (no ownership taken): the adapters given at start-up.
inline std::shared_ptr<const AdapterExec> unowned(const AdapterExec* adapter) {
  return std::shared_ptr<const AdapterExec>(std::shared_ptr<const void>(), adapter);
}

enum class Endpoint { kCompletions, kChat };

// What parsing needs to know about the server.
struct ApiContext {
  ModelRegistry* models = nullptr;  // not const: POST /lora-adapters sets its defaults
  const Tokenizer* tokenizer = nullptr;
  std::vector<int32_t> stop_ids;  // the model's end tokens, stop tokens of every request
  int64_t context = 0;            // KV positions of a slot: prompt + generated tokens
  int64_t vocab_size = 0;         // the model's (token ids of a prompt array are checked against it)
};

struct CompletionRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::shared_ptr<const ServedModel> model;  // what runs it: by `model`, by `lora`, or the defaults
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with the usage
  RequestParams params;        // the prompt's tokens, sampling, limits and stops
};

// Parses and checks a request body. Throws ApiError (400: not JSON, a wrong
// type or value, n != 1, max_tokens out of [1, context], a prompt that leaves
// no room in the context, a `lora` list that ModelRegistry::choose_lora
// refuses or that picks another adapter than `model` names; 404: an unknown model). Fields it does not know are
// ignored, as OpenAI's own server ignores them; features it does not have
// (echo, best_of, logprobs, tools) are refused rather than silently dropped.
// Unset: max_tokens is the room the context leaves; temperature 1, top_p 1,
// top_k none (OpenAI's defaults); seed random. Extensions, as vLLM has them:
// top_k, ignore_eos.
CompletionRequest parse_completion_request(Endpoint endpoint, const std::string& body, const ApiContext& api);

// Identity of one response, shared by all its chunks.
struct ResponseMeta {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string id;  // "cmpl-..." or "chatcmpl-..."
  int64_t created = 0;
  std::string model;
};
ResponseMeta make_meta(Endpoint endpoint, const std::string& model, uint64_t serial);

// The whole response of a request that did not stream.
Json completion_json(const ResponseMeta& meta, const RequestResult& result);
Json usage_json(const RequestResult& result);
// Server-sent events: "data: JSON\n\n". A text chunk (chat: the first also
// carries role "assistant"), the last chunk with the finish reason, the usage
// chunk (no choices) and the end.
std::string sse_text_chunk(const ResponseMeta& meta, const std::string& text, bool first);
std::string sse_finish_chunk(const ResponseMeta& meta, FinishReason reason);
std::string sse_usage_chunk(const ResponseMeta& meta, const RequestResult& result);
std::string sse_error(const ApiError& error);
inline constexpr const char* kSseDone = "data: [DONE]\n\n";

// Whether an Authorization header carries `Bearer KEY` (compared in constant time).
bool bearer_matches(std::string_view header, std::string_view key);

}  // namespace flora::serve
