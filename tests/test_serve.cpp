// flora serve below HTTP, on the tiny fixture model and its adapters:
// - the scheduler: requests of the base and of several adapters (FLoRA ffba,
//   ffba-aorb, LoRA) in one batch give each the tokens generate() gives it
//   alone; a step mixing FLoRA adapters has the base's synchronisation points;
//   stop strings, limits, cancellation, the queue bound and shutdown;
// - the OpenAI layer: request parsing and every refusal with its status and
//   param, response and stream-chunk shapes, the error object.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "adapters/exec.h"
#include "model/forward.h"
#include "model/generate.h"
#include "model/weights.h"
#include "serve/adapter_loader.h"
#include "serve/metrics.h"
#include "serve/openai.h"
#include "serve/scheduler.h"
#include "tiny_prompts.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace flora::serve {
namespace {

const std::string kFixtures = std::string(FLORA_SOURCE_DIR) + "/tests/fixtures/tiny_llama/";
const std::string kTokenizer = std::string(FLORA_SOURCE_DIR) + "/tests/fixtures/tokenizer/tiny_tokenizer.json";
const std::vector<std::vector<int32_t>>& kPrompts = test::kTinyPrompts;
const std::vector<int32_t> kStop = {380};  // the tiny model's eos

// The tiny model, its tokenizer and adapters attached by variant name.
struct Tiny {
  std::shared_ptr<LlamaModel> model = LlamaModel::load(kFixtures + "f32");
  Tokenizer tok = Tokenizer::from_file(kTokenizer);
  std::vector<std::unique_ptr<AttachedAdapter>> owned;
  const AdapterExec* adapter(const std::string& variant) {
    if (variant == "base") return nullptr;
    Adapter a = Adapter::load(kFixtures + "adapters/" + variant, model->config());
    owned.push_back(std::make_unique<AttachedAdapter>(*model, std::move(a), LoraExecution::Unfused));
    return owned.back()->exec();
  }
};

Tiny& setup() {
  static Tiny* s = new Tiny();
  return *s;
}

RequestParams greedy(const std::vector<int32_t>& prompt, const AdapterExec* adapter, int64_t max_tokens) {
  RequestParams p;
  p.prompt = prompt;
  p.adapter = adapter;
  p.max_tokens = max_tokens;
  p.sampling = SamplerParams{0.0f, 0, 1.0f, 0};
  p.stop_ids = kStop;
  return p;
}

// generate() on one prompt alone, with its own Forward of `context` positions.
struct Alone {
  std::vector<int32_t> tokens;
  bool stopped = false;
};
Alone run_alone(const std::vector<int32_t>& prompt, const AdapterExec* adapter, int64_t max_tokens, int64_t context,
                const std::vector<int32_t>& stop = kStop) {
  ThreadPool pool(2);
  Forward f(*setup().model, pool, context, adapter);
  Sampler s(SamplerParams{0.0f, 0, 1.0f, 0});
  Alone out;
  out.stopped = generate(f, prompt, max_tokens, s, stop, [&](int32_t id) { out.tokens.push_back(id); }).stopped;
  return out;
}

std::shared_ptr<Request> submit_ok(Scheduler& s, RequestParams p) {
  std::shared_ptr<Request> r;
  EXPECT_EQ(s.submit(std::move(p), r), Admission::kAccepted);
  return r;
}

// Eight greedy requests over the base, two FLoRA adapters and a LoRA, four
// slots (so requests join as others leave): each gets generate()'s tokens.
TEST(Scheduler, MixedAdaptersGiveEachTheTokensOfItsRunAlone) {
  Tiny& su = setup();
  const std::vector<std::string> variants = {"base", "ffba", "ffba-aorb", "lora"};
  std::vector<const AdapterExec*> execs;
  for (const auto& v : variants) execs.push_back(su.adapter(v));
  // Different max_tokens, so that requests leave at different steps and a
  // newcomer's prefill rides beside the others' decode rows.
  const int64_t context = 48;
  ThreadPool pool(2);
  Forward forward(*su.model, pool, context, nullptr, nullptr, 4);
  Scheduler sched(forward, su.tok, SchedulerOptions{16, 64, 1024});
  std::vector<std::shared_ptr<Request>> reqs;
  std::vector<Alone> want;
  for (int i = 0; i < 8; ++i) {
    const auto& prompt = kPrompts[i % kPrompts.size()];
    const AdapterExec* a = execs[i % execs.size()];
    const int64_t max_tokens = 5 + i;
    want.push_back(run_alone(prompt, a, max_tokens, context));
    reqs.push_back(submit_ok(sched, greedy(prompt, a, max_tokens)));
  }
  sched.start();
  for (int i = 0; i < 8; ++i) {
    const RequestResult r = reqs[i]->wait();
    const std::string label = "request " + std::to_string(i) + " (" + variants[i % variants.size()] + ")";
    EXPECT_EQ(r.tokens, want[i].tokens) << label;
    EXPECT_EQ(r.finish, want[i].stopped ? FinishReason::kStop : FinishReason::kLength) << label;
    EXPECT_EQ(r.text, su.tok.decode(r.tokens)) << label;
    EXPECT_EQ(r.prompt_tokens, static_cast<int64_t>(kPrompts[i % kPrompts.size()].size()));
    EXPECT_EQ(r.completion_tokens, static_cast<int64_t>(r.tokens.size()));
  }
  sched.stop(std::chrono::milliseconds(0));
  // The batch did mix: some step ran base rows beside rows of three adapters,
  // and a prefill beside decode rows.
  bool mixed = false, prefill_with_decode = false;
  for (const StepRecord& s : sched.recent_steps()) {
    mixed |= s.base_rows && s.adapters == 3;
    prefill_with_decode |= s.prefill_rows > 0 && s.decode_rows > 0;
    EXPECT_LE(s.chunks, 4);
  }
  EXPECT_TRUE(mixed);
  EXPECT_TRUE(prefill_with_decode);
}

// The sync points of every step of one run (greedy, 4 requests at once).
std::vector<uint64_t> step_sync_points(const std::vector<std::string>& variants) {
  Tiny& su = setup();
  ThreadPool pool(2);
  Forward forward(*su.model, pool, 32, nullptr, nullptr, 4);
  Scheduler sched(forward, su.tok);
  std::vector<std::shared_ptr<Request>> reqs;
  for (size_t i = 0; i < variants.size(); ++i)
    reqs.push_back(submit_ok(sched, greedy(kPrompts[i], su.adapter(variants[i]), 6)));
  sched.start();
  for (auto& r : reqs) r->wait();
  sched.stop(std::chrono::milliseconds(0));
  std::vector<uint64_t> out;
  for (const StepRecord& s : sched.recent_steps()) out.push_back(s.sync_points);
  return out;
}

// FLoRA rows of any mix add no synchronisation point to a step; LoRA rows do
// (which shows that the count sees what the rows run).
TEST(Scheduler, FloraMixedStepHasTheSyncPointsOfABaseStep) {
  const auto base = step_sync_points({"base", "base", "base", "base"});
  ASSERT_FALSE(base.empty());
  const uint64_t per_step = base.front();
  const int64_t layers = setup().model->config().num_hidden_layers;
  EXPECT_EQ(per_step, static_cast<uint64_t>(5 * layers + 1));
  for (uint64_t s : base) EXPECT_EQ(s, per_step);
  const auto flora = step_sync_points({"ffba", "base", "ffba-aorb", "ffa"});
  ASSERT_FALSE(flora.empty());
  for (uint64_t s : flora) EXPECT_EQ(s, per_step) << "a mixed FLoRA step";
  const auto lora = step_sync_points({"lora", "ffba", "base", "lora"});
  ASSERT_FALSE(lora.empty());
  EXPECT_GT(lora.front(), per_step) << "LoRA as PEFT runs adds regions";
}

// A prompt longer than the prefill budget runs in pieces of the budget,
// beside the decode rows of another request; the tokens are still generate()'s.
TEST(Scheduler, LongPromptIsPrefilledInPiecesOfTheBudget) {
  Tiny& su = setup();
  ThreadPool pool(2);
  Forward forward(*su.model, pool, 48, nullptr, nullptr, 2);
  Scheduler sched(forward, su.tok, SchedulerOptions{16, 8, 1024});
  const auto a = submit_ok(sched, greedy(kPrompts[0], nullptr, 8));  // 5 tokens: fits the budget
  const auto b = submit_ok(sched, greedy(kPrompts[1], nullptr, 8));  // 21 tokens: three pieces
  sched.start();
  EXPECT_EQ(a->wait().tokens, run_alone(kPrompts[0], nullptr, 8, 48).tokens);
  EXPECT_EQ(b->wait().tokens, run_alone(kPrompts[1], nullptr, 8, 48).tokens);
  sched.stop(std::chrono::milliseconds(0));
  int64_t prefilled = 0;
  for (const StepRecord& s : sched.recent_steps()) {
    EXPECT_LE(s.prefill_rows, 8);
    prefilled += s.prefill_rows;
  }
  EXPECT_EQ(prefilled, 5 + 21);
}

// Stop strings: the text ends before the first match, which is never
// released, and what was released (streamed) is exactly the final text.
TEST(Scheduler, StopStringEndsTheTextBeforeItAndIsNeverStreamed) {
  Tiny& su = setup();
  ThreadPool pool(2);
  Forward forward(*su.model, pool, 64, nullptr, nullptr, 2);
  Scheduler sched(forward, su.tok);
  sched.start();
  RequestParams p = greedy(kPrompts[3], nullptr, 24);
  p.stop_ids.clear();
  const RequestResult full = submit_ok(sched, p)->wait();
  ASSERT_GE(full.text.size(), 8u) << "the tiny model's text is too short for this test";
  // A stop string of three bytes from the middle of the text (whole UTF-8 characters).
  size_t at = full.text.size() / 2;
  while (at > 0 && (static_cast<unsigned char>(full.text[at]) & 0xC0) == 0x80) --at;
  size_t end = at + 3;
  while (end < full.text.size() && (static_cast<unsigned char>(full.text[end]) & 0xC0) == 0x80) ++end;
  const std::string stop = full.text.substr(at, end - at);
  const size_t cut = full.text.find(stop);

  std::string streamed;
  RequestParams q = p;
  q.stop = {"never-in-this-text", stop};
  q.on_text = [&](const std::string& piece) { streamed += piece; };
  const auto req = submit_ok(sched, q);
  std::string pulled;
  for (;;) {
    const Request::Update u = req->wait_update(std::chrono::milliseconds(100));
    pulled += u.text;
    if (u.done) break;
  }
  const RequestResult r = req->wait();
  EXPECT_EQ(r.finish, FinishReason::kStop);
  EXPECT_EQ(r.text, full.text.substr(0, cut));
  EXPECT_EQ(streamed, r.text);
  EXPECT_EQ(pulled, r.text);
  EXPECT_EQ(streamed.find(stop), std::string::npos);

  // A stop string whose start appears but which never completes: the text
  // held back while it might is released, and the whole text arrives.
  RequestParams h = p;
  h.stop = {stop + "\x01\x01\x01"};
  std::string held;
  h.on_text = [&](const std::string& piece) { held += piece; };
  const RequestResult rh = submit_ok(sched, h)->wait();
  EXPECT_EQ(rh.finish, FinishReason::kLength);
  EXPECT_EQ(rh.text, full.text);
  EXPECT_EQ(held, full.text);
  sched.stop(std::chrono::milliseconds(0));
}

// max_tokens and the end of the context end a request with kLength, at the
// same token as generate() ends it.
TEST(Scheduler, MaxTokensAndTheContextEndWithLength) {
  Tiny& su = setup();
  ThreadPool pool(2);
  const int64_t context = 24;
  Forward forward(*su.model, pool, context, nullptr, nullptr, 2);
  Scheduler sched(forward, su.tok);
  sched.start();
  RequestParams three = greedy(kPrompts[0], nullptr, 3);
  three.stop_ids.clear();
  const RequestResult r3 = submit_ok(sched, three)->wait();
  EXPECT_EQ(r3.finish, FinishReason::kLength);
  EXPECT_EQ(r3.tokens.size(), 3u);
  RequestParams room = greedy(kPrompts[1], nullptr, 1000);  // 21 of 24 positions
  room.stop_ids.clear();
  const RequestResult rr = submit_ok(sched, room)->wait();
  EXPECT_EQ(rr.finish, FinishReason::kLength);
  EXPECT_EQ(rr.tokens, run_alone(kPrompts[1], nullptr, 1000, context, {}).tokens);
  EXPECT_LE(static_cast<int64_t>(rr.tokens.size()), context - 21 + 1);
  sched.stop(std::chrono::milliseconds(0));
}

// A cancelled request frees its slot at the next step: the one queued behind
// it (one slot) runs; a cancelled queued request never runs.
TEST(Scheduler, CancelFreesTheSlotForTheNextRequest) {
  Tiny& su = setup();
  ThreadPool pool(2);
  Forward forward(*su.model, pool, 2048, nullptr, nullptr, 1);
  Scheduler sched(forward, su.tok);
  RequestParams endless = greedy(kPrompts[0], nullptr, 2000);
  endless.stop_ids.clear();
  const auto a = submit_ok(sched, endless);
  const auto gone = submit_ok(sched, greedy(kPrompts[2], nullptr, 4));
  const auto b = submit_ok(sched, greedy(kPrompts[3], nullptr, 4));
  gone->cancel();
  sched.start();
  while (a->wait_update(std::chrono::milliseconds(100)).text.empty()) {
  }
  a->cancel();
  const RequestResult rb = b->wait();
  EXPECT_EQ(rb.tokens, run_alone(kPrompts[3], nullptr, 4, 2048).tokens);
  const RequestResult ra = a->wait();
  EXPECT_EQ(ra.finish, FinishReason::kCancelled);
  EXPECT_LT(ra.tokens.size(), 2000u);
  const RequestResult rg = gone->wait();
  EXPECT_EQ(rg.finish, FinishReason::kCancelled);
  EXPECT_TRUE(rg.tokens.empty());
  sched.stop(std::chrono::milliseconds(0));
}

// The queue is bounded; after stop() nothing is accepted, and what was
// running or queued has ended (kLength: cut, not failed).
TEST(Scheduler, QueueBoundAndShutdown) {
  Tiny& su = setup();
  ThreadPool pool(2);
  Forward forward(*su.model, pool, 2048, nullptr, nullptr, 1);
  Scheduler sched(forward, su.tok, SchedulerOptions{2, 512, 64});
  RequestParams endless = greedy(kPrompts[0], nullptr, 2000);
  endless.stop_ids.clear();
  const auto running = submit_ok(sched, endless);
  sched.start();
  while (running->wait_update(std::chrono::milliseconds(100)).text.empty()) {
  }
  const auto q1 = submit_ok(sched, greedy(kPrompts[1], nullptr, 4));
  const auto q2 = submit_ok(sched, greedy(kPrompts[2], nullptr, 4));
  std::shared_ptr<Request> none;
  EXPECT_EQ(sched.submit(greedy(kPrompts[3], nullptr, 4), none), Admission::kQueueFull);
  EXPECT_EQ(none, nullptr);
  sched.stop(std::chrono::milliseconds(0));
  EXPECT_EQ(sched.submit(greedy(kPrompts[3], nullptr, 4), none), Admission::kShuttingDown);
  const RequestResult r = running->wait();
  EXPECT_EQ(r.finish, FinishReason::kLength);
  EXPECT_LT(r.tokens.size(), 2000u);
  EXPECT_EQ(q1->wait().finish, FinishReason::kLength);
  EXPECT_EQ(q2->wait().finish, FinishReason::kLength);
}

TEST(Scheduler, RefusesRequestsThatCannotRun) {
  Tiny& su = setup();
  ThreadPool pool(1);
  Forward forward(*su.model, pool, 16, nullptr, nullptr, 1);
  Scheduler sched(forward, su.tok);
  std::shared_ptr<Request> r;
  auto message = [&](RequestParams p) {
    try {
      sched.submit(std::move(p), r);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(greedy({}, nullptr, 4)).find("no tokens"), std::string::npos);
  EXPECT_NE(message(greedy(kPrompts[1], nullptr, 4)).find("21 tokens: expected fewer than the context, 16"),
            std::string::npos);
  EXPECT_NE(message(greedy({379, 384}, nullptr, 4)).find("token 2 is 384: expected an id in [0, 384)"),
            std::string::npos);
  EXPECT_NE(message(greedy({379, -1}, nullptr, 4)).find("token 2 is -1"), std::string::npos);
  EXPECT_NE(message(greedy({379}, nullptr, 0)).find("max_tokens is 0"), std::string::npos);
  RequestParams empty_stop = greedy({379}, nullptr, 4);
  empty_stop.stop = {""};
  EXPECT_NE(message(empty_stop).find("empty stop string"), std::string::npos);
  EXPECT_EQ(sched.queued(), 0);
}

// ---- the OpenAI layer ----

struct Api {
  ModelRegistry registry{"tiny"};
  ApiContext ctx;
  Api() {
    Tiny& su = setup();
    registry.add_adapter("ffba", unowned(su.adapter("ffba")), "ffba");
    registry.add_adapter("lora", unowned(su.adapter("lora")), "lora");
    ctx = ApiContext{&registry, &su.tok, kStop, 64, 384};
  }
};

// The ApiError that parsing `body` throws (status 0 when none).
ApiError refusal(Endpoint e, const std::string& body, const ApiContext& ctx) {
  try {
    parse_completion_request(e, body, ctx);
  } catch (const ApiError& err) {
    return err;
  }
  return ApiError(0, "accepted");
}

// The ApiError that `call` throws (status 0 when none).
ApiError refusal_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const ApiError& e) {
    return e;
  }
  return ApiError(0, "accepted");
}

TEST(OpenAi, CompletionRequestFields) {
  Api api;
  const Tokenizer& tok = setup().tok;
  const CompletionRequest r = parse_completion_request(
      Endpoint::kCompletions,
      R"({"model": "ffba", "prompt": "Once upon a time", "max_tokens": 7, "temperature": 0.5, "top_p": 0.9,
          "top_k": 5, "seed": 42, "stop": ["\n\n", "END"], "n": 1, "stream": true,
          "stream_options": {"include_usage": true}, "user": "ignored"})",
      api.ctx);
  EXPECT_EQ(r.model, api.registry.find("ffba"));
  EXPECT_EQ(r.params.adapter, api.registry.find("ffba")->adapter.get());
  EXPECT_NE(r.params.adapter, nullptr);
  EXPECT_EQ(r.params.prompt, tok.encode("Once upon a time", true, true));
  EXPECT_EQ(r.params.max_tokens, 7);
  EXPECT_FLOAT_EQ(r.params.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.params.sampling.top_p, 0.9f);
  EXPECT_EQ(r.params.sampling.top_k, 5);
  EXPECT_EQ(r.params.sampling.seed, 42u);
  EXPECT_EQ(r.params.stop, (std::vector<std::string>{"\n\n", "END"}));
  EXPECT_EQ(r.params.stop_ids, kStop);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);

  // Defaults: the base; OpenAI's sampling defaults; max_tokens the room left.
  const CompletionRequest d = parse_completion_request(Endpoint::kCompletions, R"({"prompt": [379, 5, 6]})", api.ctx);
  EXPECT_EQ(d.model.get(), &api.registry.base());
  EXPECT_EQ(d.params.adapter, nullptr);
  EXPECT_EQ(d.params.prompt, (std::vector<int32_t>{379, 5, 6}));
  EXPECT_EQ(d.params.max_tokens, 64 - 3);
  EXPECT_FLOAT_EQ(d.params.sampling.temperature, 1.0f);
  EXPECT_EQ(d.params.sampling.top_k, 0);
  EXPECT_FALSE(d.stream);
  // The base's own name; a one-prompt array; max_tokens clipped to the room.
  const CompletionRequest b = parse_completion_request(
      Endpoint::kCompletions, R"({"model": "tiny", "prompt": ["hi"], "max_tokens": 64})", api.ctx);
  EXPECT_EQ(b.model.get(), &api.registry.base());
  EXPECT_EQ(b.params.max_tokens, 64 - static_cast<int64_t>(b.params.prompt.size()));
  EXPECT_EQ(parse_completion_request(Endpoint::kCompletions, R"({"prompt": "x", "stop": "ab"})", api.ctx).params.stop,
            std::vector<std::string>{"ab"});
}

TEST(OpenAi, ChatMessagesGoThroughTheLlama3Template) {
  Api api;
  api.ctx.context = 256;  // the template's headers take most of 64 tokens of the tiny vocabulary
  const CompletionRequest r =
      parse_completion_request(Endpoint::kChat,
                               R"({"model": "lora", "messages": [{"role": "system", "content": "Be brief."},
          {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
          {"role": "user", "content": [{"type": "text", "text": "Again"}]}], "max_completion_tokens": 3})",
                               api.ctx);
  const std::string text =
      apply_chat_template({{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}, {"user", "Again"}}, true);
  EXPECT_EQ(r.params.prompt, setup().tok.encode(text, false, true));
  EXPECT_EQ(r.params.max_tokens, 3);
  EXPECT_EQ(r.model, api.registry.find("lora"));
}

TEST(OpenAi, BadRequestsAreRefusedWithStatusAndParam) {
  Api api;
  struct Case {
    Endpoint endpoint;
    std::string body;
    int status;
    std::string param, message;
  };
  const auto C = Endpoint::kCompletions;
  const auto H = Endpoint::kChat;
  std::string ids = "379";
  for (int i = 0; i < 63; ++i) ids += ",5";
  const std::vector<Case> cases = {
      {C, R"({"prompt": "x",)", 400, "", "not valid JSON"},
      {C, R"([1, 2])", 400, "", "expected a JSON object"},
      {C, R"({"prompt": "x", "model": "nope"})", 404, "model",
       "'nope' does not exist: expected one of tiny, ffba, lora"},
      {C, R"({"prompt": "x", "model": 3})", 400, "model", "expected a string"},
      {C, R"({"max_tokens": 4})", 400, "prompt", "required"},
      {C, R"({"prompt": 12})", 400, "prompt", "expected a string or an array of token ids"},
      {C, R"({"prompt": [379, 400]})", 400, "prompt", "item 2 is 400: expected a token id in [0, 384)"},
      {C, R"({"prompt": [379, 1.5]})", 400, "prompt", "item 2"},
      {C, R"({"prompt": ["a", "b"]})", 400, "prompt", "only one prompt"},
      {C, "{\"prompt\": [" + ids + "]}", 400, "prompt", "64 tokens: the context is 64"},
      {C, R"({"prompt": "x", "max_tokens": "5"})", 400, "max_tokens", "expected an integer, found a string"},
      {C, R"({"prompt": "x", "max_tokens": 5.5})", 400, "max_tokens", "expected an integer, found a number"},
      {C, R"({"prompt": "x", "max_tokens": 0})", 400, "max_tokens", "expected an integer in [1, 64]"},
      {C, R"({"prompt": "x", "max_tokens": -3})", 400, "max_tokens", "-3"},
      {C, R"({"prompt": "x", "max_tokens": 1000000000000})", 400, "max_tokens", "[1, 64]"},
      {C, R"({"prompt": "x", "max_tokens": 18446744073709551615})", 400, "max_tokens", "out of range"},
      {C, R"({"prompt": "x", "temperature": "hot"})", 400, "temperature", "expected a number"},
      {C, R"({"prompt": "x", "temperature": 3})", 400, "temperature", "out of range"},
      {C, R"({"prompt": "x", "top_p": 0})", 400, "top_p", "keeps no token"},
      {C, R"({"prompt": "x", "top_k": -2})", 400, "top_k", "-2"},
      {C, R"({"prompt": "x", "seed": "s"})", 400, "seed", "expected an integer"},
      {C, R"({"prompt": "x", "n": 2})", 400, "n", "only n = 1"},
      {C, R"({"prompt": "x", "stream": "yes"})", 400, "stream", "expected a boolean"},
      {C, R"({"prompt": "x", "stop": 5})", 400, "stop", "expected a string or an array of strings"},
      {C, R"({"prompt": "x", "stop": [""]})", 400, "stop", "empty string"},
      {C, R"({"prompt": "x", "echo": true})", 400, "echo", "not supported"},
      {C, R"({"prompt": "x", "logprobs": 2})", 400, "logprobs", "not supported"},
      {H, R"({"messages": []})", 400, "messages", "non-empty array"},
      {H, R"({"prompt": "x"})", 400, "messages", "required"},
      {H, R"({"messages": [{"role": "robot", "content": "x"}]})", 400, "messages[0].role", "\"robot\""},
      {H, R"({"messages": ["hi"]})", 400, "messages[0]", "expected an object"},
      {H, R"({"messages": [{"role": "user", "content": 5}]})", 400, "messages[0].content", "found an integer"},
      {H, R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", 400, "messages[0].content",
       "only text"},
      {H, R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]})", 400, "tools",
       "not supported"},
  };
  for (const Case& c : cases) {
    const ApiError e = refusal(c.endpoint, c.body, api.ctx);
    EXPECT_EQ(e.status, c.status) << c.body << ": " << e.what();
    EXPECT_EQ(e.param, c.param) << c.body;
    EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos) << c.body << ": " << e.what();
  }
  EXPECT_EQ(refusal(C, "{\"prompt\": [" + ids + "]}", api.ctx).code, "context_length_exceeded");
  EXPECT_EQ(refusal(C, R"({"prompt": "x", "model": "nope"})", api.ctx).code, "model_not_found");
}

TEST(OpenAi, ErrorObjectShape) {
  const Json e = error_json(ApiError(404, "no such model", "invalid_request_error", "model", "model_not_found"));
  EXPECT_EQ(e, Json::parse(R"({"error": {"message": "no such model", "type": "invalid_request_error",
                                         "param": "model", "code": "model_not_found"}})"));
  const Json n = error_json(ApiError(400, "bad"));
  EXPECT_TRUE(n["error"]["param"].is_null());
  EXPECT_TRUE(n["error"]["code"].is_null());
  EXPECT_EQ(sse_error(ApiError(400, "bad")).rfind("data: {\"error\":", 0), 0u);
}

TEST(OpenAi, ResponseAndStreamChunkShapes) {
  RequestResult r;
  r.text = "Hello";
  r.finish = FinishReason::kStop;
  r.prompt_tokens = 4;
  r.completion_tokens = 2;
  const ResponseMeta chat = make_meta(Endpoint::kChat, "ffba", 7);
  EXPECT_EQ(chat.id.rfind("chatcmpl-", 0), 0u);
  const Json c = completion_json(chat, r);
  EXPECT_EQ(c["object"], "chat.completion");
  EXPECT_EQ(c["model"], "ffba");
  EXPECT_EQ(c["choices"][0]["message"], Json::parse(R"({"role": "assistant", "content": "Hello"})"));
  EXPECT_EQ(c["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(c["usage"], Json::parse(R"({"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6})"));
  const ResponseMeta text = make_meta(Endpoint::kCompletions, "tiny", 8);
  r.finish = FinishReason::kLength;
  const Json t = completion_json(text, r);
  EXPECT_EQ(t["object"], "text_completion");
  EXPECT_EQ(t["choices"][0]["text"], "Hello");
  EXPECT_EQ(t["choices"][0]["finish_reason"], "length");
  EXPECT_NE(chat.id, text.id);

  auto event = [](const std::string& s) {
    EXPECT_EQ(s.rfind("data: ", 0), 0u) << s;
    EXPECT_EQ(s.substr(s.size() - 2), "\n\n") << s;
    return Json::parse(s.substr(6));
  };
  const Json first = event(sse_text_chunk(chat, "He", true));
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["id"], chat.id);
  EXPECT_EQ(first["choices"][0]["delta"], Json::parse(R"({"role": "assistant", "content": "He"})"));
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  EXPECT_FALSE(event(sse_text_chunk(chat, "llo", false))["choices"][0]["delta"].contains("role"));
  const Json last = event(sse_finish_chunk(chat, FinishReason::kStop));
  EXPECT_EQ(last["choices"][0]["delta"], Json::object());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  const Json usage = event(sse_usage_chunk(chat, r));
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 6);
  const Json tc = event(sse_text_chunk(text, "He", true));
  EXPECT_EQ(tc["object"], "text_completion");
  EXPECT_EQ(tc["choices"][0]["text"], "He");
  EXPECT_EQ(std::string(kSseDone), "data: [DONE]\n\n");
  // Text that is not valid UTF-8 (half a character) is sent with U+FFFD, not an exception.
  EXPECT_NE(sse_text_chunk(text, "\xE4\xBD", false).find("\xEF\xBF\xBD"), std::string::npos);
}

TEST(OpenAi, ModelsListAndRegistry) {
  Api api;
  const Json list = api.registry.list_json(123);
  EXPECT_EQ(list["object"], "list");
  ASSERT_EQ(list["data"].size(), 3u);
  EXPECT_EQ(list["data"][0]["id"], "tiny");
  EXPECT_TRUE(list["data"][0]["parent"].is_null());
  EXPECT_EQ(list["data"][1]["id"], "ffba");
  EXPECT_EQ(list["data"][1]["parent"], "tiny");
  EXPECT_EQ(list["data"][2]["variant"], "lora");
  EXPECT_EQ(list["data"][2]["object"], "model");
  EXPECT_EQ(api.registry.find("missing"), nullptr);
  const auto any = api.registry.find("ffba")->adapter;
  std::string message = "no error";
  try {
    api.registry.add_adapter("tiny", any, "ffba");
  } catch (const Error& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("already taken (by the base model)"), std::string::npos) << message;
}

// llama-server's convention: adapters by id with a scale, in a request's
// `lora` list or as the defaults of requests that name no adapter.
TEST(OpenAi, LlamaServerLoraListsPickOneAdapterAndScaleIt) {
  Api api;
  const AdapterExec* ffba = api.registry.find("ffba")->adapter.get();
  const AdapterExec* lora = api.registry.find("lora")->adapter.get();
  auto parse = [&](const std::string& extra) {
    return parse_completion_request(Endpoint::kCompletions, R"({"prompt": [1, 2], "max_tokens": 2)" + extra + "}",
                                    api.ctx);
  };
  // Ids in the order added; GET /lora-adapters lists them with path and default scale 0.
  const Json listed = api.registry.lora_adapters_json();
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[0]["id"], 0);
  EXPECT_EQ(listed[0]["name"], "ffba");
  EXPECT_EQ(listed[1]["id"], 1);
  EXPECT_EQ(listed[1]["scale"], 0.0);

  // A list picks the adapter with a non-zero scale, which multiplies its own s.
  CompletionRequest r = parse(R"(, "lora": [{"id": 1, "scale": 0.5}, {"id": 0, "scale": 0}])");
  EXPECT_EQ(r.model->id, "lora");
  EXPECT_EQ(r.params.adapter, lora);
  ASSERT_TRUE(r.params.scale.has_value());
  EXPECT_EQ(*r.params.scale, static_cast<float>(0.5 * lora->scale));
  r = parse(R"(, "lora": [{"id": 0, "scale": 1}])");
  EXPECT_EQ(r.params.adapter, ffba);
  EXPECT_EQ(*r.params.scale, ffba->scale);  // scale 1 is the adapter as trained
  // Every scale 0, or an empty list: the base. `model` and `lora` may agree.
  EXPECT_EQ(parse(R"(, "lora": [{"id": 0, "scale": 0}])").params.adapter, nullptr);
  EXPECT_EQ(parse(R"(, "lora": [])").model->id, "tiny");
  EXPECT_EQ(parse(R"(, "model": "ffba", "lora": [{"id": 0, "scale": 2}])").params.adapter, ffba);
  // Without a list, `model` decides, at the adapter's own scale.
  r = parse(R"(, "model": "lora")");
  EXPECT_EQ(r.params.adapter, lora);
  EXPECT_FALSE(r.params.scale.has_value());

  // Defaults: requests naming the base (or nothing) run them; an adapter named by `model` does not.
  api.registry.set_lora_defaults(Json::parse(R"([{"id": 0, "scale": 0.25}])"));
  EXPECT_EQ(api.registry.lora_adapters_json()[0]["scale"], 0.25);
  EXPECT_EQ(api.registry.lora_adapters_json()[1]["scale"], 0.0);
  r = parse("");
  EXPECT_EQ(r.model->id, "ffba");
  EXPECT_EQ(*r.params.scale, static_cast<float>(0.25 * ffba->scale));
  EXPECT_EQ(parse(R"(, "model": "tiny")").params.adapter, ffba);
  EXPECT_EQ(parse(R"(, "model": "lora")").params.adapter, lora);
  EXPECT_EQ(parse(R"(, "lora": [])").params.adapter, nullptr);  // a list replaces the defaults
  // Ids not named get 0: a second POST naming another adapter replaces the first.
  api.registry.set_lora_defaults(Json::parse(R"([{"id": 1, "scale": 1}])"));
  EXPECT_EQ(parse("").params.adapter, lora);
  EXPECT_EQ(api.registry.lora_adapters_json()[0]["scale"], 0.0);
  // Unloading the default adapter makes the base the default again; ids are never reused.
  ASSERT_TRUE(api.registry.remove_adapter("lora"));
  EXPECT_EQ(parse("").params.adapter, nullptr);
  api.registry.add_adapter("lora2", unowned(lora), "lora");
  EXPECT_EQ(api.registry.find("lora2")->lora_id, 2);
  EXPECT_EQ(parse(R"(, "lora": [{"id": 2, "scale": 1}])").model->id, "lora2");

  // Refusals: 400 naming the place, and the defaults unchanged by a refused POST.
  struct Bad {
    std::string extra, param, says;
  };
  for (const Bad& b : std::vector<Bad>{
           {R"(, "lora": {"id": 0})", "lora", "expected an array"},
           {R"(, "lora": [3])", "lora[0]", "expected an object"},
           {R"(, "lora": [{"scale": 1}])", "lora[0].id", "expected an integer adapter id"},
           {R"(, "lora": [{"id": "0", "scale": 1}])", "lora[0].id", "found a string"},
           {R"(, "lora": [{"id": 0}])", "lora[0].scale", "expected a number, found nothing"},
           {R"(, "lora": [{"id": 0, "scale": 1e9}])", "lora[0].scale", "out of range"},
           {R"(, "lora": [{"id": 1, "scale": 1}])", "lora[0].id", "no adapter has id 1: expected one of 0 (ffba), 2"},
           {R"(, "lora": [{"id": 0, "scale": 1}, {"id": 0, "scale": 0}])", "lora[1].id", "named twice"},
           {R"(, "lora": [{"id": 0, "scale": 1}, {"id": 2, "scale": 1}])", "lora", "a request runs one adapter"},
           {R"(, "model": "lora2", "lora": [{"id": 0, "scale": 1}])", "lora",
            "picks the adapter 0 ('ffba') while 'model' names the adapter 'lora2'"},
           {R"(, "model": "lora2", "lora": [])", "lora", "gives every adapter scale 0"},
       }) {
    const ApiError e = refusal(Endpoint::kCompletions, R"({"prompt": [1], "max_tokens": 1)" + b.extra + "}", api.ctx);
    EXPECT_EQ(e.status, 400) << b.extra;
    EXPECT_EQ(e.param, b.param) << b.extra;
    EXPECT_NE(std::string(e.what()).find(b.says), std::string::npos) << b.extra << ": " << e.what();
  }
  api.registry.set_lora_defaults(Json::parse(R"([{"id": 2, "scale": 1}])"));
  const ApiError e = refusal_of([&] { api.registry.set_lora_defaults(Json::parse(R"([{"id": 7, "scale": 1}])")); });
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.param, "body[0].id");
  EXPECT_EQ(parse("").model->id, "lora2");
}

TEST(OpenAi, BearerKey) {
  EXPECT_TRUE(bearer_matches("Bearer sk-1", "sk-1"));
  EXPECT_FALSE(bearer_matches("Bearer sk-2", "sk-1"));
  EXPECT_FALSE(bearer_matches("Bearer sk-1x", "sk-1"));
  EXPECT_FALSE(bearer_matches("sk-1", "sk-1"));
  EXPECT_FALSE(bearer_matches("", "sk-1"));
}

// ---- metrics ----

// The samples of an exposition: "name{labels}" -> value; fails on a line that
// is neither a comment nor "SERIES VALUE", or a sample before its # TYPE.
std::map<std::string, double> samples_of(const std::string& text) {
  std::map<std::string, double> out;
  std::set<std::string> typed;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("# TYPE ", 0) == 0) {
      typed.insert(line.substr(7, line.find(' ', 7) - 7));
      continue;
    }
    if (line.rfind("# HELP ", 0) == 0) continue;
    const size_t space = line.rfind(' ');
    EXPECT_NE(space, std::string::npos) << line;
    if (space == std::string::npos) continue;
    const std::string series = line.substr(0, space);
    std::string family = series.substr(0, series.find('{'));
    for (const char* suffix : {"_bucket", "_sum", "_count"})
      if (!typed.count(family) && family.size() > strlen(suffix) &&
          family.compare(family.size() - strlen(suffix), strlen(suffix), suffix) == 0)
        family.resize(family.size() - strlen(suffix));
    EXPECT_TRUE(typed.count(family)) << "no # TYPE before " << line;
    EXPECT_FALSE(out.count(series)) << "twice: " << series;
    out[series] = std::stod(line.substr(space + 1));
  }
  return out;
}

TEST(Metrics, ExpositionHasCountersGaugesAndCumulativeHistogramsPerModel) {
  Metrics m({0.1, 1.0}, {0.01, 0.1});
  m.add_model("tiny");
  m.add_model("a\"b");  // a name that must be escaped in a label
  auto result = [](FinishReason f, int64_t prompt, int64_t completion, double ttft, double total) {
    RequestResult r;
    r.finish = f;
    r.prompt_tokens = prompt;
    r.completion_tokens = completion;
    r.ttft_s = ttft;
    r.total_s = total;
    return r;
  };
  m.record("tiny", result(FinishReason::kStop, 5, 3, 0.05, 0.15));   // TPOT 0.05
  m.record("tiny", result(FinishReason::kLength, 7, 1, 0.5, 0.5));   // one token: no TPOT
  m.record("tiny", result(FinishReason::kCancelled, 4, 0, 0, 0.2));  // no token: no TTFT
  m.record("tiny", result(FinishReason::kStop, 2, 2, 5.0, 5.001));   // TTFT past the last bound, TPOT 0.001
  const std::string text = m.text(2, 1);
  const auto s = samples_of(text);

  EXPECT_EQ(s.at(R"(flora_requests_total{model="tiny",finish_reason="stop"})"), 2);
  EXPECT_EQ(s.at(R"(flora_requests_total{model="tiny",finish_reason="length"})"), 1);
  EXPECT_EQ(s.at(R"(flora_requests_total{model="tiny",finish_reason="cancelled"})"), 1);
  EXPECT_EQ(s.at(R"(flora_requests_total{model="a\"b",finish_reason="stop"})"), 0);
  EXPECT_EQ(s.at(R"(flora_prompt_tokens_total{model="tiny"})"), 18);
  EXPECT_EQ(s.at(R"(flora_generation_tokens_total{model="tiny"})"), 6);
  EXPECT_EQ(s.at(R"(flora_generation_tokens_total{model="a\"b"})"), 0);
  EXPECT_EQ(s.at("flora_queue_depth"), 2);
  EXPECT_EQ(s.at("flora_requests_running"), 1);
  // Buckets are cumulative ("le": at most), +Inf holds everything.
  EXPECT_EQ(s.at(R"(flora_ttft_seconds_bucket{model="tiny",le="0.1"})"), 1);
  EXPECT_EQ(s.at(R"(flora_ttft_seconds_bucket{model="tiny",le="1"})"), 2);
  EXPECT_EQ(s.at(R"(flora_ttft_seconds_bucket{model="tiny",le="+Inf"})"), 3);
  EXPECT_EQ(s.at(R"(flora_ttft_seconds_count{model="tiny"})"), 3);
  EXPECT_NEAR(s.at(R"(flora_ttft_seconds_sum{model="tiny"})"), 5.55, 1e-9);
  EXPECT_EQ(s.at(R"(flora_tpot_seconds_bucket{model="tiny",le="0.01"})"), 1);
  EXPECT_EQ(s.at(R"(flora_tpot_seconds_bucket{model="tiny",le="0.1"})"), 2);
  EXPECT_EQ(s.at(R"(flora_tpot_seconds_count{model="tiny"})"), 2);
  EXPECT_NEAR(s.at(R"(flora_tpot_seconds_sum{model="tiny"})"), 0.051, 1e-9);
  EXPECT_EQ(s.at(R"(flora_tpot_seconds_bucket{model="a\"b",le="+Inf"})"), 0);
  // Every histogram series: buckets never decrease and +Inf equals _count.
  for (const char* h : {"flora_ttft_seconds", "flora_tpot_seconds"})
    for (const char* model : {"tiny", "a\\\"b"}) {
      double last = -1;
      for (const char* le : {"0.01", "0.1", "1", "+Inf"}) {
        const auto it = s.find(fmt::format("{}_bucket{{model=\"{}\",le=\"{}\"}}", h, model, le));
        if (it == s.end()) continue;
        EXPECT_GE(it->second, last) << h << " " << model << " " << le;
        last = it->second;
      }
      EXPECT_EQ(last, s.at(fmt::format("{}_count{{model=\"{}\"}}", h, model))) << h << " " << model;
    }
  EXPECT_NE(text.find("# TYPE flora_ttft_seconds histogram\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE flora_requests_total counter\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE flora_queue_depth gauge\n"), std::string::npos);
  EXPECT_EQ(prometheus_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
}

// A request counted once when it ends, with its ttft and total from the scheduler.
TEST(Metrics, SchedulerCallsOnFinishOnceBeforeTheWaitReturns) {
  Tiny& su = setup();
  ThreadPool pool(2);
  Forward forward(*su.model, pool, 32, nullptr, nullptr, 1);
  Scheduler sched(forward, su.tok);
  Metrics metrics({1e-9}, {1e-9});
  RequestParams p = greedy(kPrompts[0], nullptr, 3);
  p.stop_ids.clear();
  int calls = 0;
  p.on_finish = [&](const RequestResult& r) {
    ++calls;
    metrics.record("tiny", r);
  };
  auto req = submit_ok(sched, p);
  sched.start();
  const RequestResult r = req->wait();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(r.completion_tokens, 3);
  EXPECT_GT(r.ttft_s, 0);
  EXPECT_GE(r.total_s, r.ttft_s);
  const auto s = samples_of(metrics.text(0, 0));
  EXPECT_EQ(s.at(R"(flora_requests_total{model="tiny",finish_reason="length"})"), 1);
  EXPECT_EQ(s.at(R"(flora_generation_tokens_total{model="tiny"})"), 3);
  EXPECT_EQ(s.at(R"(flora_tpot_seconds_count{model="tiny"})"), 1);
  sched.stop(std::chrono::milliseconds(0));
  EXPECT_EQ(calls, 1);
}

// ---- adapters at run time ----

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name)
      : path(fs::temp_directory_path() / fmt::format("flora_test_serve_{}_{}", name, getpid())) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

TEST(OpenAiRuntimeAdapters, PathsMustResolveInsideTheAdapterDir) {
  TempDir t("paths");
  const fs::path root = t.path / "adapters";
  fs::create_directories(root / "a");
  fs::create_directories(root / "c");
  fs::create_directories(t.path / "outside" / "b");
  fs::create_directories(t.path / "adapters-x");  // shares root's name as a prefix
  { std::ofstream(t.path / "outside" / "secret.json") << "{}"; }
  { std::ofstream(root / "file") << "x"; }
  fs::create_directory_symlink(t.path / "outside" / "b", root / "out");
  fs::create_directory_symlink(root / "a", root / "in");
  fs::create_symlink(t.path / "outside" / "secret.json", root / "c" / "adapter_config.json");
  const fs::path rc = fs::canonical(root);

  EXPECT_EQ(resolve_inside(rc, "a"), rc / "a");
  EXPECT_EQ(resolve_inside(rc, (root / "a").string()), rc / "a");  // absolute
  EXPECT_EQ(resolve_inside(rc, "in"), rc / "a");                   // a symlink that stays inside
  EXPECT_EQ(resolve_inside(rc, "a/../a/"), rc / "a");
  auto refused = [&](const std::string& path, const std::string& why) {
    const ApiError e = refusal_of([&] { resolve_inside(rc, path); });
    EXPECT_EQ(e.status, 400) << path;
    EXPECT_EQ(e.param, "lora_path") << path;
    const std::string message = e.what();
    EXPECT_NE(message.find(why), std::string::npos) << path << ": " << message;
    if (!path.empty()) {
      EXPECT_NE(message.find(path), std::string::npos) << path << ": " << message;
    }
  };
  refused("../outside/b", "outside the adapter directory");
  refused("a/../../outside/b", "outside the adapter directory");
  refused((t.path / "outside" / "b").string(), "outside the adapter directory");
  refused("../adapters-x", "outside the adapter directory");
  refused("out", "outside the adapter directory");  // a symlink out
  refused("c", "adapter_config.json resolves to");  // a file inside linking out
  refused("missing", "no such directory");
  refused("file", "not a directory");
  refused("", "required");
  // A NUL would end the path the system opens before the part checked here.
  const ApiError nul = refusal_of([&] { resolve_inside(rc, std::string("a\0/../../outside/b", 18)); });
  EXPECT_EQ(nul.status, 400);
  EXPECT_NE(std::string(nul.what()).find("control characters"), std::string::npos) << nul.what();
}

TEST(OpenAiRuntimeAdapters, AnUnloadedAdapterLivesUntilTheRequestsHoldingItEnd) {
  Tiny& su = setup();
  TempDir t("lifetime");
  fs::copy(kFixtures + "adapters/ffba", t.path / "ffba", fs::copy_options::recursive);
  ModelRegistry registry("tiny");
  Metrics metrics;
  AdapterLoader loader(*su.model, LoraExecution::Unfused, t.path.string(), registry, &metrics);
  EXPECT_EQ(loader.load(R"({"lora_name": "mine", "lora_path": "ffba"})"),
            "Success: LoRA adapter 'mine' added successfully.");
  ASSERT_NE(registry.find("mine"), nullptr);
  EXPECT_EQ(registry.find("mine")->variant, "ffba");
  EXPECT_EQ(registry.list_json(0)["data"].size(), 2u);
  EXPECT_NE(metrics.text(0, 0).find(R"(flora_prompt_tokens_total{model="mine"} 0)"), std::string::npos);
  std::weak_ptr<const AdapterExec> weak = registry.find("mine")->adapter;

  ThreadPool pool(2);
  Forward forward(*su.model, pool, 64, nullptr, nullptr, 2);
  Scheduler sched(forward, su.tok);
  ApiContext ctx{&registry, &su.tok, kStop, 64, 384};
  std::shared_ptr<Request> req;
  {
    const CompletionRequest parsed = parse_completion_request(
        Endpoint::kCompletions, R"({"model": "mine", "prompt": [379, 5, 6, 7], "max_tokens": 6, "temperature": 0})",
        ctx);
    ASSERT_EQ(sched.submit(parsed.params, req), Admission::kAccepted);
  }
  // Queued (the loop is not running yet): the unload takes the name away, and
  // only the name.
  EXPECT_EQ(loader.unload(R"({"lora_name": "mine"})"), "Success: LoRA adapter 'mine' removed successfully.");
  EXPECT_EQ(registry.find("mine"), nullptr);
  EXPECT_EQ(registry.list_json(0)["data"].size(), 1u);
  EXPECT_FALSE(weak.expired());
  sched.start();
  const RequestResult r = req->wait();
  // It ran the adapter it was admitted with: the tokens of the same adapter loaded at start-up.
  EXPECT_EQ(r.tokens, run_alone({379, 5, 6, 7}, su.adapter("ffba"), 6, 64).tokens);
  EXPECT_FALSE(weak.expired());  // the request still holds it
  sched.stop(std::chrono::milliseconds(0));
  req.reset();
  EXPECT_TRUE(weak.expired());
  // The next use of the name is a 404, and so is a second unload.
  const ApiError gone =
      refusal_of([&] { parse_completion_request(Endpoint::kCompletions, R"({"model": "mine", "prompt": "x"})", ctx); });
  EXPECT_EQ(gone.status, 404);
  EXPECT_EQ(refusal_of([&] { loader.unload(R"({"lora_name": "mine"})"); }).status, 404);
  // The name is free again.
  EXPECT_NO_THROW(loader.load(R"({"lora_name": "mine", "lora_path": "ffba"})"));
}

TEST(OpenAiRuntimeAdapters, BadLoadsAndUnloadsAreRefusedAndChangeNothing) {
  Tiny& su = setup();
  TempDir t("refusals");
  fs::copy(kFixtures + "adapters/lora", t.path / "lora", fs::copy_options::recursive);
  fs::create_directories(t.path / "empty");
  ModelRegistry registry("tiny");
  AdapterLoader loader(*su.model, LoraExecution::Unfused, t.path.string(), registry);
  loader.load(R"({"lora_name": "l", "lora_path": "lora"})");
  struct Case {
    std::string body;
    int status;
    std::string param, says;
    bool unload = false;
  };
  const std::vector<Case> cases = {
      {"{", 400, "", "not valid JSON"},
      {"[]", 400, "", "not a JSON object"},
      {R"({"lora_path": "lora"})", 400, "lora_name", "'lora_name': required"},
      {R"({"lora_name": 3, "lora_path": "lora"})", 400, "lora_name", "'lora_name': required"},
      {R"({"lora_name": "x"})", 400, "lora_path", "'lora_path': required"},
      {R"({"lora_name": "tiny", "lora_path": "lora"})", 400, "lora_name", "'tiny' is already served"},
      {R"({"lora_name": "l", "lora_path": "lora"})", 400, "lora_name", "'l' is already served"},
      {R"({"lora_name": "x", "lora_path": "empty"})", 400, "lora_path", "the adapter does not load"},
      {R"({"lora_name": "x", "lora_path": "lora", "lora_variant": "lora-merged"})", 400, "lora_variant",
       merged_lora_refusal()},
      {R"({"lora_name": "x", "lora_path": "lora", "lora_variant": "fused"})", 400, "lora_variant",
       "expected lora or pf-lora"},
      {R"({"lora_name": "x"})", 404, "lora_name", "no adapter named 'x'", true},
      {R"({"lora_name": "tiny"})", 400, "lora_name", "the base model, which cannot be unloaded", true},
      {"{}", 400, "lora_name", "'lora_name': required", true},
  };
  for (const Case& c : cases) {
    const ApiError e = refusal_of([&] { c.unload ? loader.unload(c.body) : loader.load(c.body); });
    EXPECT_EQ(e.status, c.status) << c.body;
    EXPECT_EQ(e.param, c.param) << c.body;
    EXPECT_NE(std::string(e.what()).find(c.says), std::string::npos) << c.body << ": " << e.what();
    EXPECT_EQ(registry.models().size(), 2u) << c.body;
  }
  // Without --adapter-dir both endpoints are off.
  ModelRegistry other("tiny");
  AdapterLoader off(*su.model, LoraExecution::Unfused, "", other);
  EXPECT_FALSE(off.enabled());
  const ApiError e = refusal_of([&] { off.load(R"({"lora_name": "l", "lora_path": "lora"})"); });
  EXPECT_EQ(e.status, 404);
  EXPECT_NE(std::string(e.what()).find("--adapter-dir"), std::string::npos);
  EXPECT_EQ(refusal_of([&] { off.unload(R"({"lora_name": "l"})"); }).status, 404);
  EXPECT_THROW(AdapterLoader(*su.model, LoraExecution::Unfused, (t.path / "none").string(), other), Error);
}

}  // namespace
}  // namespace flora::serve
