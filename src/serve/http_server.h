// The HTTP layer of `flora serve` (cpp-httplib): routes, the API key, body
// limits and server-sent events. It only translates: bodies go to
// serve/openai.h to become scheduler requests, and results come back as the
// JSON openai.h writes. httplib stays inside http_server.cpp.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "serve/adapter_loader.h"
#include "serve/metrics.h"
#include "serve/openai.h"
#include "serve/scheduler.h"

namespace flora::serve {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8080;      // 0: any free port (bind() returns it)
  std::string api_key;  // empty: none asked for
  size_t max_body_bytes = 4 << 20;
  // A response still waiting for its tokens writes something this often (an
  // SSE comment, or a space before a whole JSON body): a client that went
  // away is noticed when a write fails, and its request is cancelled.
  std::chrono::milliseconds keep_alive{1000};
  // Connections served at once: each request waiting or streaming holds one.
  int threads = 8;
};

class HttpServer {
 public:
  // scheduler and api (its registry and tokenizer) are not owned and must
  // outlive the server; so must metrics (GET /metrics; null: none) and
  // loader (the adapter endpoints; null: they answer 404).
  HttpServer(Scheduler& scheduler, ApiContext api, HttpOptions options, Metrics* metrics = nullptr,
             AdapterLoader* loader = nullptr);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds host:port; returns the port bound. Fails naming the address.
  int bind();
  // Serves on a thread of its own until stop().
  void start();
  // Responses still being written (a stream until its last event).
  int64_t in_flight() const { return in_flight_.load(); }
  // Waits up to `timeout` for in_flight() to reach 0, then closes the
  // listening socket and every connection, and joins the serving thread.
  void stop(std::chrono::milliseconds timeout);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::atomic<int64_t> in_flight_{0};
  std::thread thread_;
};

}  // namespace flora::serve
