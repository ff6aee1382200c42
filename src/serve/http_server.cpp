#include "serve/http_server.h"

#include <httplib.h>

#include <algorithm>
#include <chrono>

#include "serve/playground.h"
#include "util/error.h"
#include "util/timer.h"

namespace flora::serve {

namespace {

constexpr const char* kJson = "application/json";

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(dump_json(error_json(e)), kJson);
}

// What a request whose generation failed answers, whole or streamed.
ApiError generation_failure(const RequestResult& r) {
  return ApiError(500, "generation failed: " + r.error, "server_error");
}

// Holds a count up for as long as a response is being produced.
class InFlight {
 public:
  explicit InFlight(std::atomic<int64_t>& n) : n_(&n) { n_->fetch_add(1); }
  ~InFlight() {
    if (n_) n_->fetch_sub(1);
  }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;

 private:
  std::atomic<int64_t>* n_;
};

}  // namespace

struct HttpServer::Impl {
  httplib::Server server;
  Scheduler* scheduler;
  ApiContext api;
  HttpOptions options;
  Metrics* metrics = nullptr;
  AdapterLoader* loader = nullptr;
  std::atomic<uint64_t> serial{0};
  std::atomic<int64_t>* in_flight;

  void completions(const httplib::Request& req, httplib::Response& res, Endpoint endpoint);
};

void HttpServer::Impl::completions(const httplib::Request& req, httplib::Response& res, Endpoint endpoint) {
  auto guard = std::make_shared<InFlight>(*in_flight);
  CompletionRequest parsed;
  std::shared_ptr<Request> request;
  try {
    parsed = parse_completion_request(endpoint, req.body, api);
    // Counted where the request ends, whatever ends it (a client gone, the
    // shutdown), under the name it was asked by.
    if (metrics)
      parsed.params.on_finish = [metrics = metrics, model = parsed.model->id](const RequestResult& r) {
        metrics->record(model, r);
      };
    const Admission a = scheduler->submit(parsed.params, request);
    if (a != Admission::kAccepted) {
      res.set_header("Retry-After", "1");
      throw ApiError(503,
                     a == Admission::kQueueFull ? "the server is busy: the request queue is full; retry later"
                                                : "the server is shutting down",
                     "server_error", "", a == Admission::kQueueFull ? "queue_full" : "shutting_down");
    }
  } catch (const ApiError& e) {
    return send_error(res, e);
  } catch (const Error& e) {  // the scheduler's own checks of the request
    return send_error(res, ApiError(400, e.what()));
  }
  const ResponseMeta meta = make_meta(endpoint, parsed.model->id, serial.fetch_add(1));
  const std::chrono::milliseconds keep_alive = options.keep_alive;
  if (!parsed.stream) {
    // Most answers come within the keep-alive interval: a plain response, its
    // status and length known.
    if (request->wait_for_end(keep_alive)) {
      const RequestResult r = request->wait();
      if (r.finish == FinishReason::kError)
        return send_error(res, generation_failure(r));
      res.set_content(dump_json(completion_json(meta, r)), kJson);
      return;
    }
    // A longer one goes out chunked: a space (JSON's insignificant whitespace,
    // before the object) each interval, so that a client that went away is
    // noticed as a stream's is, by a failed write, and its request cancelled.
    // The status is 200 from the first space: a generation that fails after it
    // sends the error object as the body.
    res.set_chunked_content_provider(
        kJson,
        [request, meta, keep_alive](size_t, httplib::DataSink& sink) {
          if (!request->wait_for_end(keep_alive)) return sink.write(" ", 1);
          const RequestResult r = request->wait();
          const std::string body =
              dump_json(r.finish == FinishReason::kError
                            ? error_json(generation_failure(r))
                            : completion_json(meta, r));
          if (!sink.write(body.data(), body.size())) return false;
          sink.done();
          return true;
        },
        [request, guard](bool) mutable {
          request->cancel();
          guard.reset();
        });
    return;
  }
  // Streaming: each call of the provider waits a little for text, writes what
  // came as one chunk, and ends the stream after the finish chunk. Quiet
  // periods (queued, long prefill) get an SSE comment each keep-alive interval,
  // so that a client that went away is noticed (the write fails) and its
  // request cancelled.
  struct Stream {
    std::shared_ptr<Request> request;
    std::shared_ptr<InFlight> guard;
    ResponseMeta meta;
    bool include_usage;
    bool first = true;
    double last_write = now_seconds();
  };
  auto st = std::make_shared<Stream>(Stream{request, guard, meta, parsed.include_usage});
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [st, keep_alive](size_t, httplib::DataSink& sink) {
        auto write = [&](const std::string& s) {
          st->last_write = now_seconds();
          return sink.write(s.data(), s.size());
        };
        const Request::Update u = st->request->wait_update(std::min(std::chrono::milliseconds(250), keep_alive));
        if (!u.text.empty()) {
          if (!write(sse_text_chunk(st->meta, u.text, st->first))) return false;
          st->first = false;
        }
        if (!u.done) {
          if (now_seconds() - st->last_write >= keep_alive.count() / 1000.0 && !write(": keep-alive\n\n"))
            return false;
          return true;
        }
        const RequestResult r = st->request->wait();
        std::string tail;
        if (r.finish == FinishReason::kError) {
          tail = sse_error(generation_failure(r));
        } else {
          // Chat streams open with the role even when no text came.
          if (st->first && st->meta.endpoint == Endpoint::kChat) tail += sse_text_chunk(st->meta, "", true);
          tail += sse_finish_chunk(st->meta, r.finish);
          if (st->include_usage) tail += sse_usage_chunk(st->meta, r);
        }
        tail += kSseDone;
        if (!write(tail)) return false;
        sink.done();
        return true;
      },
      // After the last write or a failed one: a request still running has lost
      // its client, and its slot is freed at the next step.
      [st](bool) {
        st->request->cancel();
        st->guard.reset();
      });
}

HttpServer::HttpServer(Scheduler& scheduler, ApiContext api, HttpOptions options, Metrics* metrics,
                       AdapterLoader* loader)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.scheduler = &scheduler;
  m.metrics = metrics;
  m.loader = loader;
  m.api = std::move(api);
  m.options = std::move(options);
  m.in_flight = &in_flight_;
  httplib::Server& s = m.server;
  const int threads = std::max(2, m.options.threads);
  s.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  s.set_payload_max_length(m.options.max_body_bytes);
  // Short keep-alive waits, so that shutdown does not wait on idle connections.
  s.set_keep_alive_timeout(2);

  s.set_pre_routing_handler([&m](const httplib::Request& req, httplib::Response& res) {
    // The playground page holds no data (every call it makes sends the key), so a
    // browser can load it before anyone has typed the key into it.
    if (m.options.api_key.empty() || req.path == "/health" || req.path == "/")
      return httplib::Server::HandlerResponse::Unhandled;
    const std::string auth = req.get_header_value("Authorization");
    if (bearer_matches(auth, m.options.api_key)) return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, ApiError(401,
                             auth.empty() ? "no API key: expected the header 'Authorization: Bearer KEY'"
                                          : "the API key is wrong",
                             "invalid_request_error", "", "invalid_api_key"));
    return httplib::Server::HandlerResponse::Handled;
  });
  // Statuses that httplib sets itself (413, 404 of an unknown path, 400 of
  // a bad request line) get OpenAI's error object too.
  s.set_error_handler(httplib::Server::HandlerWithResponse([&m](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string message;
    if (res.status == 413)
      message = fmt::format("the request body is over the limit of {} bytes", m.options.max_body_bytes);
    else if (res.status == 404)
      message = fmt::format("no such endpoint: {} {}", req.method, req.path);
    else
      message = fmt::format("HTTP {}", res.status);
    send_error(res, ApiError(res.status, message));
    return httplib::Server::HandlerResponse::Handled;
  }));
  s.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, ApiError(500, "internal error: " + what, "server_error"));
  });

  s.Get("/health", [&m](const httplib::Request&, httplib::Response& res) {
    const Json j = {{"status", "ok"},
                    {"slots", m.scheduler->slots()},
                    {"running", m.scheduler->running()},
                    {"queued", m.scheduler->queued()},
                    {"steps", m.scheduler->steps()}};
    res.set_content(dump_json(j), kJson);
  });
  s.Get("/", [](const httplib::Request&, httplib::Response& res) {
    // The page loads nothing from elsewhere and talks only to this server; the browser holds it to that.
    res.set_header("Content-Security-Policy",
                   "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
                   "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'");
    const std::string_view page = playground_html();
    res.set_content(page.data(), page.size(), "text/html; charset=utf-8");
  });
  s.Get("/v1/models", [&m](const httplib::Request&, httplib::Response& res) {
    const int64_t created =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    res.set_content(dump_json(m.api.models->list_json(created)), kJson);
  });
  s.Get(R"(/v1/models/(.+))", [&m](const httplib::Request& req, httplib::Response& res) {
    const auto model = m.api.models->find(req.matches[1].str());
    if (!model)
      return send_error(res, ApiError(404, fmt::format("the model '{}' does not exist", req.matches[1].str()),
                                      "invalid_request_error", "model", "model_not_found"));
    res.set_content(dump_json(ModelRegistry::model_json(*model, m.api.models->base().id, 0)), kJson);
  });
  s.Get("/metrics", [&m](const httplib::Request& req, httplib::Response& res) {
    if (!m.metrics) return send_error(res, ApiError(404, fmt::format("no such endpoint: {} {}", req.method, req.path)));
    res.set_content(m.metrics->text(m.scheduler->queued(), m.scheduler->running()),
                    "text/plain; version=0.0.4; charset=utf-8");
  });
  // vLLM's run-time adapter endpoints; the loader refuses them (404) without --adapter-dir.
  // The handler outlives this constructor: it holds the Impl by pointer.
  auto adapter_route = [impl = &m](std::string (AdapterLoader::*call)(const std::string&)) {
    return [impl, call](const httplib::Request& req, httplib::Response& res) {
      if (!impl->loader)
        return send_error(res, ApiError(404,
                                        "loading adapters at run time is off: start flora serve with "
                                        "--adapter-dir DIR",
                                        "invalid_request_error", "", "not_enabled"));
      try {
        res.set_content((impl->loader->*call)(req.body), "text/plain; charset=utf-8");
      } catch (const ApiError& e) {
        send_error(res, e);
      }
    };
  };
  // llama-server's: the adapters with their ids, and the defaults of requests
  // that name no adapter (POST [{"id", "scale"}]; ids not named get 0).
  s.Get("/lora-adapters", [&m](const httplib::Request&, httplib::Response& res) {
    res.set_content(dump_json(m.api.models->lora_adapters_json()), kJson);
  });
  s.Post("/lora-adapters", [&m](const httplib::Request& req, httplib::Response& res) {
    const Json body = Json::parse(req.body, nullptr, false);
    if (body.is_discarded()) return send_error(res, ApiError(400, "the request body is not valid JSON"));
    try {
      m.api.models->set_lora_defaults(body);
    } catch (const ApiError& e) {
      return send_error(res, e);
    }
    res.set_content(dump_json({{"success", true}}), kJson);
  });
  s.Post("/v1/load_lora_adapter", adapter_route(&AdapterLoader::load));
  s.Post("/v1/unload_lora_adapter", adapter_route(&AdapterLoader::unload));
  s.Post("/v1/completions", [&m](const httplib::Request& req, httplib::Response& res) {
    m.completions(req, res, Endpoint::kCompletions);
  });
  s.Post("/v1/chat/completions",
         [&m](const httplib::Request& req, httplib::Response& res) { m.completions(req, res, Endpoint::kChat); });
}

HttpServer::~HttpServer() { stop(std::chrono::milliseconds(0)); }

int HttpServer::bind() {
  Impl& m = *impl_;
  if (m.options.port == 0) {
    const int port = m.server.bind_to_any_port(m.options.host);
    if (port < 0) fail("serve: cannot bind {} (any port)", m.options.host);
    return port;
  }
  if (!m.server.bind_to_port(m.options.host, m.options.port))
    fail("serve: cannot bind {}:{}: the address is in use or not this machine's", m.options.host, m.options.port);
  return m.options.port;
}

void HttpServer::start() {
  thread_ = std::thread([this] { impl_->server.listen_after_bind(); });
  // stop() is a no-op until the server runs: wait for it (bounded), so that an
  // early stop() cannot leave the thread listening forever.
  for (int i = 0; i < 500 && !impl_->server.is_running(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (!impl_->server.is_running()) fail("serve: the HTTP server did not start listening");
}

void HttpServer::stop(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (in_flight_.load() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (impl_->server.is_running() || thread_.joinable()) impl_->server.stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace flora::serve
