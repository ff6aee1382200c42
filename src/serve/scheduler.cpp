#include "serve/scheduler.h"

#include <algorithm>
#include <set>

#include "util/error.h"
#include "util/timer.h"

namespace flora::serve {

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kError:
      return "error";
  }
  return "error";
}

// ---- Request ----

Request::Update Request::wait_update(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return !unread_.empty() || done_; });
  Update u{std::move(unread_), done_};
  unread_.clear();
  return u;
}

bool Request::wait_for_end(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return done_; });
}

RequestResult Request::wait() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return done_; });
  return result_;
}

void Request::release(const std::string& text) {
  if (text.empty()) return;
  if (params_.on_text) params_.on_text(text);
  {
    std::lock_guard lock(mu_);
    unread_ += text;
  }
  cv_.notify_all();
}

void Request::finish(RequestResult result) {
  result.total_s = now_seconds() - submitted_;
  if (params_.on_finish) params_.on_finish(result);
  {
    std::lock_guard lock(mu_);
    result_ = std::move(result);
    done_ = true;
  }
  cv_.notify_all();
}

// ---- Scheduler ----

Scheduler::Scheduler(Forward& forward, const Tokenizer& tokenizer, SchedulerOptions options)
    : forward_(forward),
      tokenizer_(tokenizer),
      options_(options),
      slots_(forward.slots()),
      context_(forward.context()),
      vocab_(forward.config().vocab_size),
      active_(forward.slots()) {
  if (options_.max_prefill_tokens < 1)
    fail("scheduler: max_prefill_tokens is {}: expected at least 1", options_.max_prefill_tokens);
  if (options_.max_queue < 0) fail("scheduler: max_queue is {}: expected at least 0", options_.max_queue);
}

Scheduler::~Scheduler() { stop(std::chrono::milliseconds(0)); }

void Scheduler::start() {
  if (thread_.joinable()) fail("scheduler: start() called twice");
  thread_ = std::thread([this] { loop(); });
}

Admission Scheduler::submit(RequestParams params, std::shared_ptr<Request>& out) {
  const int64_t n = static_cast<int64_t>(params.prompt.size());
  if (n == 0) fail("request: the prompt has no tokens");
  if (n >= context_)
    fail("request: the prompt has {} tokens: expected fewer than the context, {} (room for one generated token)", n,
         context_);
  for (size_t i = 0; i < params.prompt.size(); ++i)
    if (params.prompt[i] < 0 || params.prompt[i] >= vocab_)
      fail("request: prompt token {} is {}: expected an id in [0, {})", i + 1, params.prompt[i], vocab_);
  if (params.max_tokens < 1) fail("request: max_tokens is {}: expected at least 1", params.max_tokens);
  for (const auto& s : params.stop)
    if (s.empty()) fail("request: an empty stop string (it would match before any text)");
  std::lock_guard lock(mu_);
  if (!accepting_) return Admission::kShuttingDown;
  // In the server at once: a request per slot, and max_queue waiting.
  if (static_cast<int64_t>(queue_.size()) + running_ >= slots_ + options_.max_queue) return Admission::kQueueFull;
  out = std::make_shared<Request>(std::move(params));
  out->submitted_ = now_seconds();
  queue_.push_back({out, out->submitted_});
  cv_.notify_all();
  return Admission::kAccepted;
}

void Scheduler::stop(std::chrono::milliseconds grace) {
  {
    std::lock_guard lock(mu_);
    if (!stopping_) {
      stopping_ = true;
      accepting_ = false;
      deadline_ = std::chrono::steady_clock::now() + grace;
    }
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  // Never started (or already stopped): whatever is still queued ends here.
  std::deque<Queued> left;
  {
    std::lock_guard lock(mu_);
    left.swap(queue_);
  }
  for (auto& q : left) {
    RequestResult r;
    r.prompt_tokens = static_cast<int64_t>(q.request->params().prompt.size());
    r.finish = q.request->cancelled() ? FinishReason::kCancelled : FinishReason::kLength;
    q.request->finish(std::move(r));
  }
}

int64_t Scheduler::queued() const {
  std::lock_guard lock(mu_);
  return static_cast<int64_t>(queue_.size());
}

int64_t Scheduler::running() const {
  std::lock_guard lock(mu_);
  return running_;
}

uint64_t Scheduler::steps() const {
  std::lock_guard lock(mu_);
  return steps_;
}

std::vector<StepRecord> Scheduler::recent_steps() const {
  std::lock_guard lock(mu_);
  return {history_.begin(), history_.end()};
}

void Scheduler::finish(std::optional<Active>& slot, FinishReason reason, std::string error) {
  Active& a = *slot;
  a.result.finish = reason;
  a.result.error = std::move(error);
  a.result.completion_tokens = static_cast<int64_t>(a.result.tokens.size());
  // Counted out before the request is told: a client that has its answer
  // and asks GET /health at once must not see it still running.
  {
    std::lock_guard lock(mu_);
    --running_;
  }
  a.request->finish(std::move(a.result));
  slot.reset();
}

// Releases the text that cannot be the start of a stop string: all of it but
// the longest tail that is a proper prefix of one of them.
void Scheduler::release_safe_text(Active& a) {
  const std::string& text = a.result.text;
  size_t hold = 0;
  for (const auto& s : a.request->params().stop) {
    const size_t most = std::min(s.size() - 1, text.size() - a.emitted);
    for (size_t k = most; k > hold; --k)
      if (text.compare(text.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
  }
  const size_t safe = text.size() - hold;
  if (safe > a.emitted) {
    a.request->release(text.substr(a.emitted, safe - a.emitted));
    a.emitted = safe;
  }
}

bool Scheduler::accept_token(int slot, int32_t id) {
  Active& a = *active_[slot];
  const RequestParams& p = a.request->params();
  std::string& text = a.result.text;
  const bool stop_token = std::find(p.stop_ids.begin(), p.stop_ids.end(), id) != p.stop_ids.end();
  if (!stop_token) {
    a.result.tokens.push_back(id);
    a.next = id;
    text += a.decoder.push(id);
  }
  const bool at_limit = !stop_token && (static_cast<int64_t>(a.result.tokens.size()) >= p.max_tokens ||
                                        forward_.position(slot) >= forward_.context());
  const bool ends = stop_token || at_limit;
  if (ends) text += a.decoder.flush();
  // A stop string can only begin in the text not yet released (released text
  // held no start of one that could still complete).
  size_t cut = std::string::npos;
  for (const auto& s : p.stop) cut = std::min(cut, text.find(s, a.emitted));
  if (cut != std::string::npos) text.resize(cut);
  if (cut != std::string::npos || ends) {
    // Held-back text that never became a stop string is text after all.
    if (text.size() > a.emitted) a.request->release(text.substr(a.emitted));
    a.emitted = text.size();
    finish(active_[slot], cut != std::string::npos || stop_token ? FinishReason::kStop : FinishReason::kLength);
    return true;
  }
  release_safe_text(a);
  return false;
}

void Scheduler::loop() {
  const int64_t V = vocab_;
  std::vector<Forward::Chunk> chunks;
  std::vector<bool> samples;  // (chunks) whether the chunk's logits choose a token
  for (;;) {
    std::vector<Queued> admitted;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty() || running_ > 0; });
      const bool idle = queue_.empty() && running_ == 0;
      const bool past_deadline = stopping_ && std::chrono::steady_clock::now() >= deadline_;
      if (stopping_ && (idle || past_deadline)) break;
      // Queued requests whose clients went away leave the queue now.
      for (auto it = queue_.begin(); it != queue_.end();) {
        if (!it->request->cancelled()) {
          ++it;
          continue;
        }
        RequestResult r;
        r.prompt_tokens = static_cast<int64_t>(it->request->params().prompt.size());
        r.finish = FinishReason::kCancelled;
        it->request->finish(std::move(r));
        it = queue_.erase(it);
      }
      // Admissions: free slots take queued requests in order.
      int free = 0;
      for (const auto& a : active_) free += a ? 0 : 1;
      while (free > 0 && !queue_.empty()) {
        Queued q = std::move(queue_.front());
        queue_.pop_front();
        admitted.push_back(std::move(q));
        --free;
        ++running_;
      }
    }
    // A cancelled request (its client went away) frees its slot now.
    for (auto& a : active_)
      if (a && a->request->cancelled()) finish(a, FinishReason::kCancelled);
    const double t_step = now_seconds();
    for (auto& q : admitted) {
      int s = 0;
      while (active_[s]) ++s;
      forward_.reset(s);
      const RequestParams& p = q.request->params();
      active_[s].emplace(
          Active{q.request, Sampler(p.sampling), StreamDecoder(tokenizer_, false), q.submitted, 0, 0, {}, 0});
      active_[s]->result.prompt_tokens = static_cast<int64_t>(p.prompt.size());
      active_[s]->result.queued_s = t_step - q.submitted;
    }

    // The step's chunks: decode rows first, then prompt pieces in admission
    // order within the prefill budget. A prompt that fits the budget left runs
    // whole; one longer than the whole budget runs in pieces; otherwise it
    // waits for the next step.
    chunks.clear();
    samples.clear();
    StepRecord rec;
    std::set<const AdapterExec*> adapters;
    auto add = [&](int s, const int32_t* tokens, int64_t n, bool sample) {
      const Active& a = *active_[s];
      const RequestParams& p = a.request->params();
      chunks.push_back({s, tokens, n, p.adapter, p.scale});
      samples.push_back(sample);
      if (p.adapter)
        adapters.insert(p.adapter);
      else
        rec.base_rows = true;
    };
    for (int s = 0; s < slots_; ++s) {
      const auto& a = active_[s];
      if (a && a->prefilled == static_cast<int64_t>(a->request->params().prompt.size())) add(s, &a->next, 1, true);
    }
    rec.decode_rows = static_cast<int64_t>(chunks.size());
    // Decode rows of one adapter and scale side by side: the forward pass runs
    // an adapter's low-rank products once per run of consecutive rows, so
    // streams interleaved over four adapters would otherwise be sixteen runs of
    // one row. A row's arithmetic does not depend on the others
    // (model/forward.h), so the order changes no output.
    std::stable_sort(chunks.begin(), chunks.end(), [](const Forward::Chunk& x, const Forward::Chunk& y) {
      const auto key = [](const Forward::Chunk& c) {
        return std::pair{reinterpret_cast<uintptr_t>(c.adapter.value_or(nullptr)), c.scale.value_or(0.0f)};
      };
      return key(x) < key(y);
    });
    // Slots in order of admission: those admitted earlier are partially
    // prefilled already, so ordering by the submit time keeps it FIFO.
    std::vector<int> prefilling;
    for (int s = 0; s < slots_; ++s)
      if (active_[s] && active_[s]->prefilled < static_cast<int64_t>(active_[s]->request->params().prompt.size()))
        prefilling.push_back(s);
    std::stable_sort(prefilling.begin(), prefilling.end(),
                     [&](int x, int y) { return active_[x]->submitted < active_[y]->submitted; });
    int64_t budget = options_.max_prefill_tokens;
    for (int s : prefilling) {
      Active& a = *active_[s];
      const auto& prompt = a.request->params().prompt;
      const int64_t left = static_cast<int64_t>(prompt.size()) - a.prefilled;
      int64_t n = left;
      if (left > budget) {
        if (budget < options_.max_prefill_tokens && left <= options_.max_prefill_tokens) break;
        n = budget;
      }
      if (n == 0) break;
      add(s, prompt.data() + a.prefilled, n, n == left);
      a.prefilled += n;
      budget -= n;
      rec.prefill_rows += n;
    }
    if (chunks.empty()) continue;  // every running request was cancelled

    const float* logits = nullptr;
    try {
      logits = forward_.forward_batch(chunks, false);
    } catch (const std::exception& e) {
      for (const auto& c : chunks) finish(active_[c.slot], FinishReason::kError, e.what());
      continue;
    }
    rec.sync_points = forward_.last_sync_points();
    const double t_chosen = now_seconds();
    for (size_t k = 0; k < chunks.size(); ++k) {
      if (!samples[k]) continue;
      const int s = chunks[k].slot;
      Active& a = *active_[s];
      // A NaN logit (sampler) or an id the tokenizer cannot decode ends this
      // request only.
      try {
        const int32_t id = a.sampler.sample(logits + static_cast<int64_t>(k) * V, V);
        if (a.result.tokens.empty()) a.result.ttft_s = t_chosen - a.submitted;
        accept_token(s, id);
      } catch (const std::exception& e) {
        if (active_[s]) finish(active_[s], FinishReason::kError, e.what());
      }
    }
    rec.chunks = static_cast<int64_t>(chunks.size());
    rec.rows = rec.decode_rows + rec.prefill_rows;
    rec.adapters = static_cast<int64_t>(adapters.size());
    rec.seconds = now_seconds() - t_step;
    std::lock_guard lock(mu_);
    ++steps_;
    history_.push_back(rec);
    while (history_.size() > options_.step_history) history_.pop_front();
  }
  // Shutdown after the grace period: what is still running ends as it stands.
  for (auto& a : active_)
    if (a) {
      a->result.text += a->decoder.flush();
      if (a->emitted < a->result.text.size()) a->request->release(a->result.text.substr(a->emitted));
      finish(a, a->request->cancelled() ? FinishReason::kCancelled : FinishReason::kLength);
    }
}

}  // namespace flora::serve
