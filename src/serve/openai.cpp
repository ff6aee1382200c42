#include "serve/openai.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>

#include "tokenizer/chat_template.h"
#include "util/error.h"

namespace flora::serve {

namespace {

constexpr size_t kMaxStopStrings = 16;
constexpr size_t kMaxStopBytes = 256;

ApiError bad(const std::string& param, const std::string& message, const std::string& code = "") {
  return ApiError(400, message, "invalid_request_error", param, code);
}

std::string type_name(const Json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  return "an object";
}

// The field `key` of the body, or nullptr when absent or null (OpenAI's
// clients send null for "not set").
const Json* field(const Json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

// An integer that int64 holds: JSON 5 (not 5.0, not 1e30).
std::optional<int64_t> get_int(const Json& body, const char* key) {
  const Json* v = field(body, key);
  if (!v) return std::nullopt;
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
    throw bad(key, fmt::format("'{}': {} is out of range", key, json_preview(*v)));
  if (!v->is_number_integer()) throw bad(key, fmt::format("'{}': expected an integer, found {}", key, type_name(*v)));
  return v->get<int64_t>();
}

std::optional<double> get_number(const Json& body, const char* key, double lo, double hi) {
  const Json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) throw bad(key, fmt::format("'{}': expected a number, found {}", key, type_name(*v)));
  const double x = v->get<double>();
  if (!(x >= lo && x <= hi)) throw bad(key, fmt::format("'{}': {} is out of range: expected [{}, {}]", key, x, lo, hi));
  return x;
}

std::optional<bool> get_bool(const Json& body, const char* key) {
  const Json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) throw bad(key, fmt::format("'{}': expected a boolean, found {}", key, type_name(*v)));
  return v->get<bool>();
}

// Message content: a string, or an array of {"type": "text", "text": ...} parts.
std::string message_content(const Json& content, size_t index) {
  const std::string param = fmt::format("messages[{}].content", index);
  if (content.is_null()) return "";
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array())
    throw bad(param,
              fmt::format("'{}': expected a string or an array of text parts, found {}", param, type_name(content)));
  std::string text;
  for (const Json& part : content) {
    if (!part.is_object() || part.value("type", Json()) != "text" || !part.contains("text") ||
        !part["text"].is_string())
      throw bad(param, fmt::format("'{}': expected parts {{\"type\": \"text\", \"text\": STRING}} (only text is "
                                   "supported), found {}",
                                   param, json_preview(part)));
    text += part["text"].get<std::string>();
  }
  return text;
}

std::vector<int32_t> chat_prompt(const Json& body, const ApiContext& api) {
  const Json* messages = field(body, "messages");
  if (!messages) throw bad("messages", "'messages': required, an array of {\"role\", \"content\"} objects");
  if (!messages->is_array() || messages->empty())
    throw bad("messages", fmt::format("'messages': expected a non-empty array, found {}", json_preview(*messages)));
  std::vector<ChatMessage> chat;
  for (size_t i = 0; i < messages->size(); ++i) {
    const Json& m = (*messages)[i];
    if (!m.is_object())
      throw bad(fmt::format("messages[{}]", i),
                fmt::format("'messages[{}]': expected an object, found {}", i, type_name(m)));
    const Json role = m.value("role", Json());
    if (!role.is_string() || (role != "system" && role != "user" && role != "assistant"))
      throw bad(fmt::format("messages[{}].role", i),
                fmt::format("'messages[{}].role': expected \"system\", \"user\" or \"assistant\", found {}", i,
                            json_preview(role)));
    chat.push_back({role.get<std::string>(), message_content(m.value("content", Json()), i)});
  }
  return api.tokenizer->encode(apply_chat_template(chat, true), false, true);
}

// A prompt: a string, an array of token ids, or an array holding one of those.
std::vector<int32_t> completion_prompt(const Json& body, const ApiContext& api) {
  const Json* prompt = field(body, "prompt");
  if (!prompt) throw bad("prompt", "'prompt': required, a string or an array of token ids");
  const Json* p = prompt;
  if (p->is_array() && p->size() == 1 && ((*p)[0].is_string() || (*p)[0].is_array())) p = &(*p)[0];
  const Tokenizer& tok = *api.tokenizer;
  if (p->is_string()) return tok.encode(p->get<std::string>(), tok.bos_id().has_value(), true);
  if (!p->is_array())
    throw bad("prompt", fmt::format("'prompt': expected a string or an array of token ids, found {}", type_name(*p)));
  std::vector<int32_t> ids;
  for (const Json& id : *p) {
    if (id.is_string() || id.is_array())
      throw bad("prompt", "'prompt': only one prompt per request (n = 1): found an array of several");
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= api.vocab_size)
      throw bad("prompt", fmt::format("'prompt': item {} is {}: expected a token id in [0, {})", ids.size() + 1,
                                      json_preview(id), api.vocab_size));
    ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
  }
  return ids;
}

std::vector<std::string> stop_strings(const Json& body) {
  const Json* stop = field(body, "stop");
  if (!stop) return {};
  std::vector<std::string> out;
  auto add = [&](const Json& s) {
    if (!s.is_string())
      throw bad("stop", fmt::format("'stop': expected a string or an array of strings, found {}", json_preview(s)));
    const std::string text = s.get<std::string>();
    if (text.empty()) throw bad("stop", "'stop': an empty string would stop before any text");
    if (text.size() > kMaxStopBytes)
      throw bad("stop", fmt::format("'stop': a string of {} bytes: expected at most {}", text.size(), kMaxStopBytes));
    out.push_back(text);
  };
  if (stop->is_array()) {
    if (stop->size() > kMaxStopStrings)
      throw bad("stop", fmt::format("'stop': {} strings: expected at most {}", stop->size(), kMaxStopStrings));
    for (const Json& s : *stop) add(s);
  } else {
    add(*stop);
  }
  return out;
}

}  // namespace

Json error_json(const ApiError& error) {
  Json e = {{"message", error.what()}, {"type", error.type}};
  e["param"] = error.param.empty() ? Json() : Json(error.param);
  e["code"] = error.code.empty() ? Json() : Json(error.code);
  return {{"error", e}};
}

std::string dump_json(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

// ---- models ----

ModelRegistry::ModelRegistry(std::string base_id)
    : base_(std::make_shared<const ServedModel>(ServedModel{std::move(base_id), nullptr, "base", "", -1})) {
  if (base_->id.empty()) fail("serve: the base model's name is empty");
  models_.push_back(base_);
}

void ModelRegistry::add_adapter(const std::string& name, std::shared_ptr<const AdapterExec> adapter,
                                const std::string& variant, const std::string& source, const std::string& path) {
  if (name.empty()) fail("{}: an empty adapter name: expected NAME=DIR", source);
  if (!adapter) fail("{} {}: no adapter to run", source, name);
  std::lock_guard lock(mu_);
  for (const auto& m : models_)
    if (m->id == name)
      fail("{} {}: the name is already taken (by {}): expected a distinct name per adapter", source, name,
           m->adapter ? "another adapter" : "the base model");
  models_.push_back(
      std::make_shared<const ServedModel>(ServedModel{name, std::move(adapter), variant, path, next_lora_id_++}));
}

bool ModelRegistry::remove_adapter(const std::string& name) {
  std::lock_guard lock(mu_);
  for (auto it = models_.begin(); it != models_.end(); ++it)
    if ((*it)->id == name && (*it)->adapter) {
      if (default_lora_ && default_lora_->first == (*it)->lora_id) default_lora_.reset();
      models_.erase(it);
      return true;
    }
  return false;
}

std::shared_ptr<const ServedModel> ModelRegistry::find(std::string_view id) const {
  std::lock_guard lock(mu_);
  for (const auto& m : models_)
    if (m->id == id) return m;
  return nullptr;
}

std::vector<std::shared_ptr<const ServedModel>> ModelRegistry::models() const {
  std::lock_guard lock(mu_);
  return models_;
}

Json ModelRegistry::model_json(const ServedModel& m, const std::string& base_id, int64_t created) {
  Json e = {{"id", m.id}, {"object", "model"}, {"created", created}, {"owned_by", "flora"}};
  e["parent"] = m.adapter ? Json(base_id) : Json();
  e["root"] = base_id;
  e["variant"] = m.variant;
  return e;
}

Json ModelRegistry::list_json(int64_t created) const {
  Json data = Json::array();
  for (const auto& m : models()) data.push_back(model_json(*m, base().id, created));
  return {{"object", "list"}, {"data", data}};
}

namespace {

// A `lora` list checked against `models`: the adapter with a non-zero scale
// (null: none) and that scale.
struct LoraPick {
  std::shared_ptr<const ServedModel> model;
  double scale = 0;
};

LoraPick pick_lora(const std::vector<std::shared_ptr<const ServedModel>>& models, const Json& list,
                   const std::string& param) {
  if (!list.is_array())
    throw bad(param, fmt::format("'{}': expected an array of {{\"id\": INT, \"scale\": NUMBER}}, found {}", param,
                                 type_name(list)));
  auto known = [&] {
    std::string s;
    for (const auto& m : models)
      if (m->adapter) s += fmt::format("{}{} ({})", s.empty() ? "" : ", ", m->lora_id, m->id);
    return s.empty() ? std::string("none: no adapter is served") : s;
  };
  LoraPick pick;
  std::vector<int64_t> seen;
  for (size_t i = 0; i < list.size(); ++i) {
    const Json& e = list[i];
    const std::string at = fmt::format("{}[{}]", param, i);
    if (!e.is_object())
      throw bad(at, fmt::format("'{}': expected an object {{\"id\": INT, \"scale\": NUMBER}}, found {}", at,
                                json_preview(e)));
    const Json* id = field(e, "id");
    if (!id || !id->is_number_integer())
      throw bad(at + ".id", fmt::format("'{}.id': expected an integer adapter id (GET /lora-adapters lists them), "
                                        "found {}",
                                        at, id ? type_name(*id) : "nothing"));
    const Json* scale = field(e, "scale");
    if (!scale || !scale->is_number())
      throw bad(at + ".scale",
                fmt::format("'{}.scale': expected a number, found {}", at, scale ? type_name(*scale) : "nothing"));
    const double x = scale->get<double>();
    if (!(std::abs(x) <= ModelRegistry::kMaxLoraScale))
      throw bad(at + ".scale",
                fmt::format("'{}.scale': {} is out of range: expected [-{}, {}]", at, json_preview(*scale),
                            ModelRegistry::kMaxLoraScale, ModelRegistry::kMaxLoraScale));
    const int64_t n =
        id->is_number_unsigned() && id->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX) ? -1 : id->get<int64_t>();
    if (std::find(seen.begin(), seen.end(), n) != seen.end())
      throw bad(at + ".id", fmt::format("'{}.id': adapter {} is named twice", at, n));
    seen.push_back(n);
    const auto it =
        std::find_if(models.begin(), models.end(), [n](const auto& m) { return m->adapter && m->lora_id == n; });
    if (it == models.end())
      throw bad(at + ".id",
                fmt::format("'{}.id': no adapter has id {}: expected one of {}", at, json_preview(*id), known()),
                "lora_not_found");
    if (x == 0) continue;
    if (pick.model)
      throw bad(param, fmt::format("'{}': non-zero scales for adapters {} ({}) and {} ({}): a request runs one "
                                   "adapter (each row of a batch carries one); give the others scale 0",
                                   param, pick.model->lora_id, pick.model->id, n, (*it)->id));
    pick = {*it, x};
  }
  return pick;
}

LoraChoice choice_of(const LoraPick& pick, const std::shared_ptr<const ServedModel>& base) {
  if (!pick.model) return {base, std::nullopt};
  return {pick.model, static_cast<float>(pick.scale * pick.model->adapter->scale)};
}

}  // namespace

LoraChoice ModelRegistry::choose_lora(const Json& list, const std::string& param) const {
  return choice_of(pick_lora(models(), list, param), base_);
}

void ModelRegistry::set_lora_defaults(const Json& list) {
  const LoraPick pick = pick_lora(models(), list, "body");
  std::lock_guard lock(mu_);
  // An adapter unloaded since the check is not made the default.
  const bool served = pick.model && std::find(models_.begin(), models_.end(), pick.model) != models_.end();
  if (served)
    default_lora_ = {{pick.model->lora_id, pick.scale}};
  else
    default_lora_.reset();
}

LoraChoice ModelRegistry::lora_defaults() const {
  std::lock_guard lock(mu_);
  if (default_lora_)
    for (const auto& m : models_)
      if (m->adapter && m->lora_id == default_lora_->first) return choice_of({m, default_lora_->second}, base_);
  return {base_, std::nullopt};
}

Json ModelRegistry::lora_adapters_json() const {
  std::lock_guard lock(mu_);
  Json list = Json::array();
  for (const auto& m : models_) {
    if (!m->adapter) continue;
    const double scale = default_lora_ && default_lora_->first == m->lora_id ? default_lora_->second : 0.0;
    list.push_back({{"id", m->lora_id}, {"path", m->path}, {"scale", scale}, {"name", m->id}, {"variant", m->variant}});
  }
  return list;
}

// ---- requests ----

CompletionRequest parse_completion_request(Endpoint endpoint, const std::string& body_text, const ApiContext& api) {
  Json body = Json::parse(body_text, nullptr, false);
  if (body.is_discarded()) throw bad("", "the request body is not valid JSON");
  if (!body.is_object()) throw bad("", fmt::format("the request body is {}: expected a JSON object", type_name(body)));

  CompletionRequest r;
  r.endpoint = endpoint;
  if (const Json* model = field(body, "model")) {
    if (!model->is_string()) throw bad("model", fmt::format("'model': expected a string, found {}", type_name(*model)));
    r.model = api.models->find(model->get<std::string>());
    if (!r.model) {
      std::string known;
      for (const auto& m : api.models->models()) known += (known.empty() ? "" : ", ") + m->id;
      throw ApiError(404,
                     fmt::format("the model '{}' does not exist: expected one of {}", model->get<std::string>(), known),
                     "invalid_request_error", "model", "model_not_found");
    }
  } else {
    r.model = api.models->base_ptr();
  }
  // llama-server's convention: a `lora` list, or else the defaults for a
  // request that names the base.
  LoraChoice choice{r.model, std::nullopt};
  if (const Json* lora = field(body, "lora")) {
    choice = api.models->choose_lora(*lora, "lora");
    if (r.model->adapter && choice.model != r.model)
      throw bad("lora", fmt::format("'lora' {} while 'model' names the adapter '{}': name the adapter in one of them "
                                    "(or the base model in 'model')",
                                    choice.model->adapter ? fmt::format("picks the adapter {} ('{}')",
                                                                        choice.model->lora_id, choice.model->id)
                                                          : std::string("gives every adapter scale 0"),
                                    r.model->id));
  } else if (!r.model->adapter) {
    choice = api.models->lora_defaults();
  }
  r.model = choice.model;

  if (const auto n = get_int(body, "n"); n && *n != 1)
    throw bad("n", fmt::format("'n': {}: only n = 1 is supported", *n));
  if (const auto echo = get_bool(body, "echo"); echo && *echo) throw bad("echo", "'echo': not supported");
  if (const auto best_of = get_int(body, "best_of"); best_of && *best_of != 1)
    throw bad("best_of", "'best_of': only 1 is supported");
  if (const Json* lp = field(body, "logprobs"); lp && !(lp->is_boolean() && !lp->get<bool>()))
    throw bad("logprobs", "'logprobs': not supported");
  for (const char* key : {"tools", "functions"})
    if (const Json* t = field(body, key); t && !(t->is_array() && t->empty()))
      throw bad(key, fmt::format("'{}': not supported", key));

  r.stream = get_bool(body, "stream").value_or(false);
  if (const Json* so = field(body, "stream_options")) {
    if (!so->is_object())
      throw bad("stream_options", fmt::format("'stream_options': expected an object, found {}", type_name(*so)));
    r.include_usage = get_bool(*so, "include_usage").value_or(false);
  }

  RequestParams& p = r.params;
  p.adapter = r.model->adapter.get();
  p.scale = choice.scale;
  // The request owns its adapter from here: an unload cannot free it under it.
  p.keep_alive = r.model->adapter;
  p.prompt = endpoint == Endpoint::kChat ? chat_prompt(body, api) : completion_prompt(body, api);
  const int64_t n_prompt = static_cast<int64_t>(p.prompt.size());
  if (n_prompt == 0) throw bad("prompt", "the prompt has no tokens");
  if (n_prompt >= api.context)
    throw bad(endpoint == Endpoint::kChat ? "messages" : "prompt",
              fmt::format("the prompt has {} tokens: the context is {} (--ctx), which leaves no room for a generated "
                          "token",
                          n_prompt, api.context),
              "context_length_exceeded");

  // max_tokens (chat also max_completion_tokens, its newer name): at most the
  // context, and clipped to the room the prompt leaves there.
  std::optional<int64_t> max_tokens = get_int(body, "max_tokens");
  if (endpoint == Endpoint::kChat && !max_tokens) max_tokens = get_int(body, "max_completion_tokens");
  const int64_t room = api.context - n_prompt;
  if (max_tokens && (*max_tokens < 1 || *max_tokens > api.context))
    throw bad("max_tokens", fmt::format("'max_tokens': {}: expected an integer in [1, {}] (the context, --ctx)",
                                        *max_tokens, api.context));
  p.max_tokens = std::min(max_tokens.value_or(room), room);

  p.sampling.temperature = static_cast<float>(get_number(body, "temperature", 0.0, 2.0).value_or(1.0));
  const double top_p = get_number(body, "top_p", 0.0, 1.0).value_or(1.0);
  if (top_p <= 0.0) throw bad("top_p", "'top_p': 0 keeps no token: expected (0, 1]");
  p.sampling.top_p = static_cast<float>(top_p);
  const int64_t top_k = get_int(body, "top_k").value_or(0);
  if (top_k < -1 || top_k > INT32_MAX)
    throw bad("top_k", fmt::format("'top_k': {}: expected -1 or 0 (no limit) or a positive count", top_k));
  p.sampling.top_k = top_k < 0 ? 0 : static_cast<int>(top_k);
  if (const auto seed = get_int(body, "seed"))
    p.sampling.seed = static_cast<uint64_t>(*seed);
  else
    p.sampling.seed = std::random_device{}();
  p.stop = stop_strings(body);
  // ignore_eos (vLLM's extension): only max_tokens, the context and stop strings end the text.
  if (!get_bool(body, "ignore_eos").value_or(false)) p.stop_ids = api.stop_ids;
  return r;
}

// ---- responses ----

ResponseMeta make_meta(Endpoint endpoint, const std::string& model, uint64_t serial) {
  ResponseMeta m;
  m.endpoint = endpoint;
  m.created =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  m.id = fmt::format("{}-{:x}{:06x}", endpoint == Endpoint::kChat ? "chatcmpl" : "cmpl", m.created, serial);
  m.model = model;
  return m;
}

Json usage_json(const RequestResult& result) {
  return {{"prompt_tokens", result.prompt_tokens},
          {"completion_tokens", result.completion_tokens},
          {"total_tokens", result.prompt_tokens + result.completion_tokens}};
}

namespace {

Json envelope(const ResponseMeta& meta, bool chunk) {
  const char* object =
      meta.endpoint == Endpoint::kChat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion";
  return {{"id", meta.id}, {"object", object}, {"created", meta.created}, {"model", meta.model}};
}

std::string sse(const Json& j) { return "data: " + dump_json(j) + "\n\n"; }

}  // namespace

Json completion_json(const ResponseMeta& meta, const RequestResult& result) {
  Json j = envelope(meta, false);
  Json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_reason_name(result.finish)}};
  if (meta.endpoint == Endpoint::kChat)
    choice["message"] = {{"role", "assistant"}, {"content", result.text}};
  else
    choice["text"] = result.text;
  j["choices"] = Json::array({choice});
  j["usage"] = usage_json(result);
  return j;
}

std::string sse_text_chunk(const ResponseMeta& meta, const std::string& text, bool first) {
  Json j = envelope(meta, true);
  Json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
  if (meta.endpoint == Endpoint::kChat) {
    Json delta = {{"content", text}};
    if (first) delta["role"] = "assistant";
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  j["choices"] = Json::array({choice});
  return sse(j);
}

std::string sse_finish_chunk(const ResponseMeta& meta, FinishReason reason) {
  Json j = envelope(meta, true);
  Json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_reason_name(reason)}};
  if (meta.endpoint == Endpoint::kChat)
    choice["delta"] = Json::object();
  else
    choice["text"] = "";
  j["choices"] = Json::array({choice});
  return sse(j);
}

std::string sse_usage_chunk(const ResponseMeta& meta, const RequestResult& result) {
  Json j = envelope(meta, true);
  j["choices"] = Json::array();
  j["usage"] = usage_json(result);
  return sse(j);
}

std::string sse_error(const ApiError& error) { return sse(error_json(error)); }

bool bearer_matches(std::string_view header, std::string_view key) {
  constexpr std::string_view kPrefix = "Bearer ";
  if (header.size() != kPrefix.size() + key.size() || header.substr(0, kPrefix.size()) != kPrefix) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < key.size(); ++i) diff |= static_cast<unsigned char>(header[kPrefix.size() + i] ^ key[i]);
  return diff == 0;
}

}  // namespace flora::serve
