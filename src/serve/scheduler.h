// The serving scheduler: a bounded queue of generation requests, the KV-cache
// slots of one Forward, and the loop that runs them (continuous batching).
// It sits above the model and knows nothing of HTTP: a front end submits a
// request and then waits for its text (whole, or piece by piece to stream).
//
// Each step of the loop is one Forward::forward_batch call holding a chunk for
// every request in a slot: a decode row (its last chosen token) for each one
// that is generating, and the prompt chunk of each one being prefilled, the
// prompt tokens of one step bounded by max_prefill_tokens. Every chunk names its
// request's own adapter (nullptr: the base model) and scale, so requests with
// different adapters share the pass. A row's arithmetic does not depend on the
// other rows (model/forward.h), so with greedy sampling a request's tokens are
// the same as generate() gives it alone, whatever shares its steps.
//
// Threads: one thread (start()) runs the loop and is the only one that touches
// the Forward; submit(), cancel() and the Request's waits may be called from any
// thread.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "model/adapter_exec.h"
#include "model/forward.h"
#include "model/sampler.h"
#include "tokenizer/tokenizer.h"

namespace flora::serve {

// kStop: a stop token or stop string; kLength: max_tokens, the end of the
// context, or cut at shutdown after the grace period; kCancelled: the client
// went away; kError: the step failed (message in RequestResult::error).
enum class FinishReason { kStop, kLength, kCancelled, kError };
const char* finish_reason_name(FinishReason reason);  // "stop", "length", "cancelled", "error"

struct RequestResult {
  std::vector<int32_t> tokens;  // generated (a stop token not included)
  std::string text;             // their text, cut before a stop string
  FinishReason finish = FinishReason::kLength;
  std::string error;  // kError only
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;  // tokens.size()
  double queued_s = 0;            // submit -> admitted into a slot
  double ttft_s = 0;              // submit -> first token chosen
  double total_s = 0;             // submit -> the end
};

struct RequestParams {
  std::vector<int32_t> prompt;           // at least one token, fewer than the context
  const AdapterExec* adapter = nullptr;  // nullptr: the base model; not owned: see keep_alive
  std::optional<float> scale;            // unset: the adapter's own
  SamplerParams sampling{0.0f, 0, 1.0f, 0};
  int64_t max_tokens = 16;  // at least 1; generation also ends at the end of the context
  // Stop strings, matched on the decoded text: the text ends before the first
  // match, which is not part of it. Text that could be the start of a stop
  // string is held back until it is known not to be one.
  std::vector<std::string> stop;
  std::vector<int32_t> stop_ids;  // stop tokens: end generation, not part of the text
  // Called on the scheduler thread with each piece of text as it is released
  // (the same pieces Request::wait_update returns); optional.
  std::function<void(const std::string&)> on_text;
  // Called once with the result when the request ends, however it ends (also
  // cancelled in the queue or cut at shutdown), on the thread that ends it and
  // before any wait returns: a client that has its answer sees it counted.
  std::function<void(const RequestResult&)> on_finish;
  // Keeps what `adapter` points into alive while the request can still run:
  // an adapter unloaded at run time is freed only after the requests that
  // named it have ended. Empty where the adapter outlives the scheduler.
  std::shared_ptr<const void> keep_alive;
};

// A submitted request as the front end sees it.
class Request {
 public:
  explicit Request(RequestParams params) : params_(std::move(params)) {}
  struct Update {
    std::string text;  // released since the last call
    bool done = false;
  };
  // Waits up to `timeout` for new text or the end, and takes what arrived.
  Update wait_update(std::chrono::milliseconds timeout);
  // Waits for the end; the result (its text is the whole text, taken or not).
  RequestResult wait();
  // Waits up to `timeout` for the end; true when it came.
  bool wait_for_end(std::chrono::milliseconds timeout);
  // The scheduler drops the request at its next step (freeing its slot); it
  // then ends with kCancelled unless it had already ended.
  void cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }
  const RequestParams& params() const { return params_; }

 private:
  friend class Scheduler;
  void release(const std::string& text);  // scheduler thread
  void finish(RequestResult result);      // scheduler thread

  const RequestParams params_;
  double submitted_ = 0;  // now_seconds() at submit (set by the scheduler)
  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::string unread_;
  bool done_ = false;
  RequestResult result_;
};

struct SchedulerOptions {
  // Requests waiting beyond those in slots: with every slot taken and this
  // many queued, submit() answers kQueueFull.
  int64_t max_queue = 64;
  // Prompt tokens run in one step. Bounds the activations of a call, (rows,
  // intermediate_size) floats. A prompt no longer than this is prefilled in
  // one step (as generate() runs it alone); a longer one in pieces of it.
  int64_t max_prefill_tokens = 512;
  size_t step_history = 256;  // StepRecords kept (the most recent)
};

// What one step ran.
struct StepRecord {
  int64_t rows = 0;          // tokens in the call
  int64_t prefill_rows = 0;  // of them, prompt tokens
  int64_t decode_rows = 0;
  int64_t chunks = 0;        // requests in the call
  int64_t adapters = 0;      // distinct adapters among the chunks (the base not counted)
  bool base_rows = false;    // some chunk ran the base model
  uint64_t sync_points = 0;  // Forward::last_sync_points() of the call
  double seconds = 0;
};

enum class Admission { kAccepted, kQueueFull, kShuttingDown };

class Scheduler {
 public:
  // forward: its slots are the scheduler's; it is used only by the loop thread
  // from start() on. tokenizer: decodes the text. Neither is owned.
  Scheduler(Forward& forward, const Tokenizer& tokenizer, SchedulerOptions options = {});
  ~Scheduler();  // stop(0)
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Launches the loop thread. Requests submitted before it wait in the queue,
  // so that a test can have them all start in one step.
  void start();
  // Queues a request: `out` is set when accepted. Fails (flora::Error) on a
  // request that cannot run: no prompt, a prompt that fills the context, a
  // token outside the vocabulary, max_tokens < 1.
  Admission submit(RequestParams params, std::shared_ptr<Request>& out);
  // Stops accepting, lets requests queued and running finish for up to
  // `grace`, then ends those left with kLength, and joins the loop thread.
  void stop(std::chrono::milliseconds grace);

  int64_t context() const { return context_; }
  int slots() const { return slots_; }
  int64_t queued() const;
  int64_t running() const;
  uint64_t steps() const;
  std::vector<StepRecord> recent_steps() const;

 private:
  // A request in a slot: loop-thread state.
  struct Active {
    std::shared_ptr<Request> request;
    Sampler sampler;
    StreamDecoder decoder;
    double submitted = 0;
    int64_t prefilled = 0;  // prompt tokens already in the KV cache
    int32_t next = 0;       // the last chosen token, the next decode input
    RequestResult result;
    size_t emitted = 0;  // bytes of result.text released
  };
  struct Queued {
    std::shared_ptr<Request> request;
    double submitted;
  };

  void loop();
  // Ends a request and frees its slot.
  void finish(std::optional<Active>& slot, FinishReason reason, std::string error = "");
  // A chosen token: text, stop strings, limits. Returns true when the request ended.
  bool accept_token(int slot, int32_t id);
  void release_safe_text(Active& a);

  Forward& forward_;
  const Tokenizer& tokenizer_;
  const SchedulerOptions options_;
  const int slots_;
  const int64_t context_;
  const int64_t vocab_;

  mutable std::mutex mu_;  // guards everything below, up to the loop's own state
  std::condition_variable cv_;
  std::deque<Queued> queue_;
  bool accepting_ = true;
  bool stopping_ = false;
  std::chrono::steady_clock::time_point deadline_;
  int64_t running_ = 0;
  uint64_t steps_ = 0;
  std::deque<StepRecord> history_;

  std::vector<std::optional<Active>> active_;  // (slots) loop thread only
  std::thread thread_;
};

}  // namespace flora::serve
