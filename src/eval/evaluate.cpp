#include "eval/evaluate.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>

#include "dist/dist.h"
#include "model/forward.h"
#include "model/generate.h"
#include "util/error.h"
#include "util/file.h"
#include "util/timer.h"

namespace flora::eval {

namespace {

// Tokens of a prompt: bos (when the tokenizer has one) + the text. Special
// tokens written in the data are plain text: records are data, not markup.
std::vector<int32_t> encode_prompt(const Tokenizer& tok, const std::string& text) {
  return tok.encode(text, tok.bos_id().has_value(), /*parse_special=*/false);
}

// log sum_j exp(row[j]), in double. NaN or +Inf logits (a broken model) are an
// error, not a NaN score; all -Inf has no softmax either.
double log_sum_exp(const float* row, int64_t V) {
  float mx = -INFINITY;
  bool nan = false;
  for (int64_t j = 0; j < V; ++j) {
    nan |= row[j] != row[j];
    mx = row[j] > mx ? row[j] : mx;
  }
  if (nan) fail("logits: a NaN among the {} of a position: the forward pass computed no number", V);
  if (mx == -INFINITY) fail("logits: all {} of a position are -Inf", V);
  if (mx == INFINITY) fail("logits: a +Inf among the {} of a position: log-likelihoods are undefined", V);
  double sum = 0;
  for (int64_t j = 0; j < V; ++j) sum += std::exp(static_cast<double>(row[j]) - mx);
  return mx + std::log(sum);
}

Json record_fields(const EvalRecord& rec, size_t index) {
  Json j;
  j["index"] = index;
  j["line"] = rec.line;
  if (!rec.id.is_null()) j["id"] = rec.id;
  return j;
}

void report(const EvalProgressFn& progress, size_t done, size_t total, int64_t tokens, double t0) {
  if (progress) progress(EvalProgress{done, total, tokens, now_seconds() - t0});
}

// Under mpirun each rank runs the model on its share of the records
// (dist::my_share) and fills items[share]; this fills the others' from them
// (to_json / from_json: one item; msgpack keeps doubles exact), so that every
// rank scores all records in record order, as one process does, and the
// metrics are the same bits. With one process: nothing.
template <typename T, typename ToJson, typename FromJson>
void share_results(std::vector<T>& items, ToJson to_json, FromJson from_json) {
  if (dist::size() == 1) return;
  const int64_t n = static_cast<int64_t>(items.size());
  const dist::Share mine = dist::my_share(n);
  Json part = Json::array();
  for (int64_t i = mine.begin; i < mine.end; ++i) part.push_back(to_json(items[static_cast<size_t>(i)]));
  const std::vector<std::uint8_t> bytes = Json::to_msgpack(part);
  const std::vector<std::string> all = dist::allgather(std::string(bytes.begin(), bytes.end()));
  for (int r = 0; r < dist::size(); ++r) {
    if (r == dist::rank()) continue;
    const dist::Share theirs = dist::share(n, r, dist::size());
    const Json got = Json::from_msgpack(all[static_cast<size_t>(r)]);
    FLORA_ASSERT(static_cast<int64_t>(got.size()) == theirs.end - theirs.begin);
    for (int64_t i = theirs.begin; i < theirs.end; ++i)
      items[static_cast<size_t>(i)] = from_json(got[static_cast<size_t>(i - theirs.begin)]);
  }
}

// A count summed over the ranks (each counted its own share).
int64_t summed_over_ranks(int64_t mine) {
  int64_t total = 0;
  for (int64_t v : dist::allgather_values(std::vector<int64_t>{mine})) total += v;
  return total;
}

// Prompts longer than the model's context are refused with the record's place.
void check_prompt_length(const RecordSet& data, const EvalRecord& rec, int64_t tokens, int64_t room,
                         const LlamaConfig& cfg) {
  if (tokens + room > cfg.max_position_embeddings)
    fail("{}:{}: the prompt has {} tokens{}; the model's context is {}", data.path, rec.line, tokens,
         room > 0 ? fmt::format(" (+ {} to generate or score)", room) : "", cfg.max_position_embeddings);
}

void run_generate(const EvalModel& m, const RecordSet& data, EvalResult& r, const EvalProgressFn& progress) {
  const EvalSettings& s = r.settings;
  const LlamaConfig& cfg = m.model->config();
  const auto& recs = data.records;
  const size_t N = recs.size();
  std::vector<std::string> prompt_texts(N);
  std::vector<std::vector<int32_t>> prompts(N);
  int64_t longest = 0;
  for (size_t i = 0; i < N; ++i) {
    prompt_texts[i] = record_prompt(recs[i]);
    prompts[i] = encode_prompt(*m.tokenizer, prompt_texts[i]);
    const int64_t n = static_cast<int64_t>(prompts[i].size());
    check_prompt_length(data, recs[i], n, 1, cfg);
    longest = std::max(longest, n);
  }
  const int64_t context = std::min(cfg.max_position_embeddings, longest + s.max_new_tokens);
  const dist::Share mine = dist::my_share(static_cast<int64_t>(N));
  const size_t first = static_cast<size_t>(mine.begin), count = static_cast<size_t>(mine.end - mine.begin);
  std::vector<SequenceResult> outputs(N);
  BatchedGenerationStats st;
  if (count > 0) {
    const int slots = static_cast<int>(std::min<size_t>(s.batch, count));
    Forward forward(*m.model, *m.pool, context, m.adapter, m.layers, slots);
    BatchedGenerationOptions o;
    o.max_new_tokens = s.max_new_tokens;
    o.sampling = s.sampling;
    o.sampling.seed += first;  // prompt i of this share is record first + i, which samples with seed + first + i
    o.stop_ids = stop_token_ids(cfg, *m.tokenizer);
    const std::vector<std::vector<int32_t>> share(prompts.begin() + mine.begin, prompts.begin() + mine.end);
    size_t done = 0;
    int64_t tokens = 0;
    const double t0 = now_seconds();
    report(progress, 0, count, 0, t0);
    st = generate_batched(forward, share, o, [&](size_t i, SequenceResult&& out) {
      tokens += static_cast<int64_t>(share[i].size() + out.tokens.size());
      outputs[first + i] = std::move(out);
      report(progress, ++done, count, tokens, t0);
    });
  }
  share_results(
      outputs,
      [](const SequenceResult& o) {
        return Json{{"tokens", o.tokens}, {"stopped", o.stopped}};
      },
      [](const Json& j) {
        return SequenceResult{j.at("tokens").get<std::vector<int32_t>>(), j.at("stopped").get<bool>()};
      });
  r.prompt_tokens = summed_over_ranks(st.prompt_tokens);
  r.generated_tokens = summed_over_ranks(st.generated_tokens);
  r.forward_calls = summed_over_ranks(st.forward_calls);

  // Scored exactly as `flora score` scores the saved examples.
  std::vector<Example> examples(N);
  for (size_t i = 0; i < N; ++i)
    examples[i] = Example{m.tokenizer->decode(outputs[i].tokens), recs[i].reference, recs[i].choices};
  const ScoreResult scored = score_examples(score_task(s.task), examples);
  r.metrics = scored.metrics;
  size_t correct = 0, unparsed = 0, stopped = 0;
  for (size_t i = 0; i < N; ++i) {
    const Verdict& v = scored.examples[i];
    correct += v.correct;
    unparsed += !v.parsed;
    stopped += outputs[i].stopped;
    Json j = record_fields(recs[i], i);
    j.update(scored.example_json(i));
    j["line"] = recs[i].line;
    j["prompt"] = prompt_texts[i];
    if (!recs[i].choices.empty()) j["choices"] = recs[i].choices;
    j["prompt_tokens"] = prompts[i].size();
    j["generated_tokens"] = outputs[i].tokens.size();
    j["stopped"] = outputs[i].stopped;
    r.examples.push_back(std::move(j));
  }
  r.counts = Json::object();
  if (s.task != EvalTask::Rouge) {
    r.counts["correct"] = correct;
    r.counts["unparseable"] = unparsed;
  }
  r.counts["stopped_at_eos"] = stopped;
}

void run_loglik(const EvalModel& m, const RecordSet& data, EvalResult& r, const EvalProgressFn& progress) {
  const EvalSettings& s = r.settings;
  const LlamaConfig& cfg = m.model->config();
  const int64_t V = cfg.vocab_size;
  const auto& recs = data.records;
  const size_t N = recs.size();
  struct Item {
    std::string prompt_text;
    std::vector<int32_t> prompt;
    std::vector<std::string> texts;           // continuations
    std::vector<std::vector<int32_t>> conts;  // their tokens
    size_t reference = 0;
    std::vector<double> logprob;  // per continuation
  };
  std::vector<Item> items(N);
  int64_t context = 1;
  for (size_t i = 0; i < N; ++i) {
    Item& it = items[i];
    it.prompt_text = record_prompt(recs[i]);
    it.prompt = encode_prompt(*m.tokenizer, it.prompt_text);
    it.texts = mcq_continuations(recs[i]);
    it.reference = mcq_reference_index(recs[i]);
    int64_t longest = 1;
    for (const auto& t : it.texts) {
      it.conts.push_back(m.tokenizer->encode(t, false, false));
      if (it.conts.back().empty()) fail("{}:{}: the continuation '{}' has no tokens", data.path, recs[i].line, t);
      longest = std::max(longest, static_cast<int64_t>(it.conts.back().size()));
    }
    const int64_t P = static_cast<int64_t>(it.prompt.size());
    check_prompt_length(data, recs[i], P, longest, cfg);
    context = std::max(context, P + longest);
  }
  const dist::Share mine = dist::my_share(static_cast<int64_t>(N));
  const size_t first = static_cast<size_t>(mine.begin), end = static_cast<size_t>(mine.end);
  const int slots = static_cast<int>(std::max<size_t>(1, std::min<size_t>(s.batch, end - first)));
  std::unique_ptr<Forward> forward_ptr;
  if (end > first) forward_ptr = std::make_unique<Forward>(*m.model, *m.pool, context, m.adapter, m.layers, slots);
  std::vector<std::vector<float>> last(slots);  // (V) the prompt's last logits, per slot
  std::vector<double> last_lse(slots);
  std::vector<Forward::Chunk> chunks;
  int64_t tokens = 0;
  const double t0 = now_seconds();
  report(progress, 0, end - first, 0, t0);
  for (size_t g = first; g < end; g += slots) {
    Forward& forward = *forward_ptr;
    const size_t members = std::min<size_t>(slots, end - g);
    // The prompts of the group side by side; each one's last logits score its continuations' first token.
    chunks.clear();
    for (size_t b = 0; b < members; ++b) {
      forward.reset(static_cast<int>(b));
      const auto& p = items[g + b].prompt;
      chunks.push_back({static_cast<int>(b), p.data(), static_cast<int64_t>(p.size())});
      tokens += static_cast<int64_t>(p.size());
    }
    const float* logits = forward.forward_batch(chunks, false);
    for (size_t b = 0; b < members; ++b) {
      last[b].assign(logits + b * V, logits + (b + 1) * V);
      last_lse[b] = log_sum_exp(last[b].data(), V);
    }
    // Continuation c of every member in one call, each after its own prompt.
    size_t most = 0;
    for (size_t b = 0; b < members; ++b) most = std::max(most, items[g + b].conts.size());
    for (size_t c = 0; c < most; ++c) {
      chunks.clear();
      std::vector<size_t> who;
      for (size_t b = 0; b < members; ++b) {
        const Item& it = items[g + b];
        if (c >= it.conts.size()) continue;
        forward.truncate(static_cast<int>(b), static_cast<int64_t>(it.prompt.size()));
        chunks.push_back({static_cast<int>(b), it.conts[c].data(), static_cast<int64_t>(it.conts[c].size())});
        tokens += chunks.back().n;
        who.push_back(b);
      }
      logits = forward.forward_batch(chunks, true);  // (sum of n, V)
      int64_t row = 0;
      for (size_t k = 0; k < who.size(); ++k) {
        const size_t b = who[k];
        const auto& cont = items[g + b].conts[c];
        double lp = last[b][cont[0]] - last_lse[b];
        for (size_t j = 1; j < cont.size(); ++j) {
          const float* prev = logits + (row + static_cast<int64_t>(j) - 1) * V;
          lp += prev[cont[j]] - log_sum_exp(prev, V);
        }
        items[g + b].logprob.push_back(lp);
        row += static_cast<int64_t>(cont.size());
      }
    }
    report(progress, g + members - first, end - first, tokens, t0);
  }
  std::vector<std::vector<double>> logprobs(N);  // per record, per continuation
  for (size_t i = first; i < end; ++i) logprobs[i] = std::move(items[i].logprob);
  share_results(
      logprobs, [](const std::vector<double>& v) { return Json(v); },
      [](const Json& j) { return j.get<std::vector<double>>(); });
  for (size_t i = 0; i < N; ++i) items[i].logprob = std::move(logprobs[i]);
  r.prompt_tokens = summed_over_ranks(tokens);

  size_t correct = 0, correct_norm = 0;
  for (size_t i = 0; i < N; ++i) {
    const Item& it = items[i];
    size_t best = 0, best_norm = 0;
    auto norm = [&](size_t c) { return it.logprob[c] / static_cast<double>(it.conts[c].size()); };
    for (size_t c = 1; c < it.logprob.size(); ++c) {
      if (it.logprob[c] > it.logprob[best]) best = c;
      if (norm(c) > norm(best_norm)) best_norm = c;
    }
    correct += best == it.reference;
    correct_norm += best_norm == it.reference;
    Json j = record_fields(recs[i], i);
    j["prompt"] = it.prompt_text;
    j["prediction"] = it.texts[best];
    j["reference"] = recs[i].reference;
    if (!recs[i].choices.empty()) j["choices"] = recs[i].choices;
    j["expected"] = recs[i].labels[it.reference];
    j["extracted"] = recs[i].labels[best];
    j["extracted_norm"] = recs[i].labels[best_norm];
    j["verdict"] = best == it.reference ? "correct" : "wrong";
    Json options = Json::array();
    for (size_t c = 0; c < it.texts.size(); ++c)
      options.push_back({{"continuation", it.texts[c]},
                         {"tokens", it.conts[c].size()},
                         {"logprob", it.logprob[c]},
                         {"logprob_per_token", norm(c)}});
    j["options"] = options;
    r.examples.push_back(std::move(j));
  }
  const double n = static_cast<double>(std::max<size_t>(N, 1));
  r.metrics = {{"accuracy", correct / n}, {"accuracy_norm", correct_norm / n}};
  r.counts = {{"correct", correct}, {"correct_norm", correct_norm}};
}

void run_ppl(const EvalModel& m, const RecordSet& data, EvalResult& r, const EvalProgressFn& progress) {
  const EvalSettings& s = r.settings;
  const LlamaConfig& cfg = m.model->config();
  const int64_t V = cfg.vocab_size;
  // Rows per call with every row's logits: (rows, V) floats, kept near 64 MiB.
  const int64_t chunk = std::clamp<int64_t>((int64_t{1} << 24) / V, 1, 256);
  Forward forward(*m.model, *m.pool, s.ppl_window, m.adapter, m.layers, 1);
  const auto& recs = data.records;
  const size_t N = recs.size();
  struct Doc {
    double nll = 0;
    int64_t tokens = 0, scored = 0, run_tokens = 0;  // run: the window tokens run through the model
  };
  std::vector<Doc> docs(N);
  const dist::Share mine = dist::my_share(static_cast<int64_t>(N));
  const size_t first = static_cast<size_t>(mine.begin), end = static_cast<size_t>(mine.end);
  int64_t run_tokens = 0;
  const double t0 = now_seconds();
  report(progress, 0, end - first, 0, t0);
  for (size_t i = first; i < end; ++i) {
    const std::vector<int32_t> ids = encode_prompt(*m.tokenizer, recs[i].text);
    const int64_t n = static_cast<int64_t>(ids.size());
    double nll = 0;
    int64_t scored = 0, doc_run = 0;
    for (const PplWindow& w : ppl_windows(n, s.ppl_window, s.ppl_stride)) {
      forward.reset();
      // Context before the first scored target: run, logits not needed.
      for (int64_t p = w.begin; p < w.score_from - 1; p += chunk)
        forward.forward(ids.data() + p, std::min(chunk, w.score_from - 1 - p), false);
      // Positions score_from - 1 .. end - 2 predict the targets score_from .. end - 1.
      for (int64_t p = w.score_from - 1; p < w.end - 1; p += chunk) {
        const int64_t rows = std::min(chunk, w.end - 1 - p);
        const float* logits = forward.forward(ids.data() + p, rows, true);
        for (int64_t k = 0; k < rows; ++k) {
          const float* row = logits + k * V;
          nll += log_sum_exp(row, V) - row[ids[p + k + 1]];
        }
        scored += rows;
      }
      doc_run += w.end - 1 - w.begin;
    }
    docs[i] = Doc{nll, n, scored, doc_run};
    run_tokens += doc_run;
    report(progress, i + 1 - first, end - first, run_tokens, t0);
  }
  share_results(
      docs,
      [](const Doc& d) {
        return Json{{"nll", d.nll}, {"tokens", d.tokens}, {"scored", d.scored}, {"run", d.run_tokens}};
      },
      [](const Json& j) {
        return Doc{j.at("nll").get<double>(), j.at("tokens").get<int64_t>(), j.at("scored").get<int64_t>(),
                   j.at("run").get<int64_t>()};
      });
  double total_nll = 0;
  int64_t total_scored = 0, total_tokens = 0;
  run_tokens = 0;
  for (size_t i = 0; i < N; ++i) {
    const Doc& d = docs[i];
    total_nll += d.nll;
    total_scored += d.scored;
    total_tokens += d.tokens;
    run_tokens += d.run_tokens;
    Json j = record_fields(recs[i], i);
    j["tokens"] = d.tokens;
    j["scored_tokens"] = d.scored;
    j["nll"] = d.nll;
    if (d.scored > 0) {
      j["mean_nll"] = d.nll / static_cast<double>(d.scored);
      j["perplexity"] = std::exp(d.nll / static_cast<double>(d.scored));
    }
    r.examples.push_back(std::move(j));
  }
  if (total_scored == 0) fail("{}: no token to score (every text has fewer than 2 tokens)", data.path);
  const double mean = total_nll / static_cast<double>(total_scored);
  r.metrics = {{"perplexity", std::exp(mean)}, {"nll", mean}};
  r.counts = {{"documents", N}, {"tokens", total_tokens}, {"scored_tokens", total_scored}};
  r.prompt_tokens = run_tokens;
}

std::string metric_cell(double v) { return fmt::format("{:.4f}", v); }

}  // namespace

McqMode parse_mcq_mode(const std::string& name) {
  if (name == "generate") return McqMode::Generate;
  if (name == "loglik") return McqMode::Loglik;
  fail("--mcq-mode '{}': expected generate or loglik", name);
}

const char* mcq_mode_name(McqMode mode) { return mode == McqMode::Loglik ? "loglik" : "generate"; }

EvalSettings EvalSettings::resolved(const LlamaConfig& config) const {
  EvalSettings s = *this;
  if (s.max_new_tokens <= 0) s.max_new_tokens = default_max_new_tokens(task);
  if (s.batch < 1) fail("--batch: expected at least 1, found {}", s.batch);
  if (task == EvalTask::Ppl) {
    if (s.ppl_window <= 0) s.ppl_window = std::min<int64_t>(1024, config.max_position_embeddings);
    if (s.ppl_window > config.max_position_embeddings)
      fail("--ppl-window {}: expected at most the model's context, {}", s.ppl_window, config.max_position_embeddings);
    if (s.ppl_stride <= 0) s.ppl_stride = std::max<int64_t>(1, s.ppl_window / 2);
    ppl_windows(0, s.ppl_window, s.ppl_stride);  // checks the two
    s.max_new_tokens = 0;
  }
  return s;
}

Json EvalSettings::to_json() const {
  Json j;
  if (task == EvalTask::Mcq) j["mcq_mode"] = mcq_mode_name(mcq_mode);
  if (task == EvalTask::Ppl) {
    j["ppl_window"] = ppl_window;
    j["ppl_stride"] = ppl_stride;
    return j;
  }
  j["batch"] = batch;
  if (task == EvalTask::Mcq && mcq_mode == McqMode::Loglik) return j;
  j["max_new_tokens"] = max_new_tokens;
  j["sampling"] = sampling.temperature == 0.0f ? Json{{"greedy", true}}
                                               : Json{{"greedy", false},
                                                      {"temperature", sampling.temperature},
                                                      {"top_k", sampling.top_k},
                                                      {"top_p", sampling.top_p},
                                                      {"seed", sampling.seed}};
  return j;
}

double EvalResult::metric(const std::string& name) const {
  for (const auto& [k, v] : metrics)
    if (k == name) return v;
  fail("no metric '{}' for task {}", name, eval_task_name(settings.task));
}

EvalResult evaluate(const EvalModel& m, const RecordSet& data, const EvalSettings& settings,
                    const EvalProgressFn& progress) {
  FLORA_ASSERT(m.model && m.tokenizer && m.pool);
  if (data.records.empty()) fail("{}: no records to evaluate", data.path);
  EvalResult r;
  r.settings = settings.resolved(m.model->config());
  r.count = data.records.size();
  const double t0 = now_seconds();
  if (r.settings.task == EvalTask::Ppl)
    run_ppl(m, data, r, progress);
  else if (r.settings.task == EvalTask::Mcq && r.settings.mcq_mode == McqMode::Loglik)
    run_loglik(m, data, r, progress);
  else
    run_generate(m, data, r, progress);
  r.seconds = now_seconds() - t0;
  return r;
}

Json results_json(const EvalResult& r, const RecordSet& data, const Json& run) {
  Json j;
  j["task"] = eval_task_name(r.settings.task);
  Json metrics = Json::object();
  for (const auto& [k, v] : r.metrics) metrics[k] = v;
  j["metrics"] = metrics;
  j["count"] = r.count;
  j["skipped"] = data.skipped;
  j["counts"] = r.counts;
  j["data"] = data.path;
  for (const auto& [k, v] : run.items()) j[k] = v;
  j["settings"] = r.settings.to_json();
  const double total = static_cast<double>(r.prompt_tokens + r.generated_tokens);
  j["speed"] = {{"seconds", r.seconds},
                {"prompt_tokens", r.prompt_tokens},
                {"generated_tokens", r.generated_tokens},
                {"tokens_per_s", r.seconds > 0 ? total / r.seconds : 0.0},
                {"generated_tokens_per_s", r.seconds > 0 ? r.generated_tokens / r.seconds : 0.0}};
  if (r.forward_calls > 0) j["speed"]["forward_calls"] = r.forward_calls;
  j["skip_messages"] = data.skip_messages;
  return j;
}

std::string results_markdown(const EvalResult& r, const RecordSet& data, const Json& run) {
  const EvalSettings& s = r.settings;
  std::string task = eval_task_name(s.task);
  if (s.task == EvalTask::Mcq) task += fmt::format(" ({})", mcq_mode_name(s.mcq_mode));
  auto text = [&](const char* key) {
    auto it = run.find(key);
    return it == run.end() || it->is_null() ? std::string("none")
           : it->is_string()                ? it->get<std::string>()
                                            : it->dump();
  };
  std::string header = "| task | model | adapter | examples | skipped |", rule = "| --- | --- | --- | ---: | ---: |";
  std::string row =
      fmt::format("| {} | {} | {} | {} | {} |", task, text("model"), text("adapter"), r.count, data.skipped);
  for (const auto& [name, value] : r.metrics) {
    header += fmt::format(" {} |", name);
    rule += " ---: |";
    row += fmt::format(" {} |", metric_cell(value));
  }
  std::string out = fmt::format("# flora eval: {}\n\n{}\n{}\n{}\n\n", task, header, rule, row);
  out += fmt::format("- data: `{}`\n", data.path);
  if (run.contains("adapter_variant") && !run["adapter_variant"].is_null())
    out += fmt::format("- adapter variant: {}\n", text("adapter_variant"));
  out += fmt::format("- settings: `{}`\n", s.to_json().dump());
  out += fmt::format("- counts: `{}`\n", r.counts.dump());
  const double total = static_cast<double>(r.prompt_tokens + r.generated_tokens);
  out +=
      fmt::format("- time: {:.1f} s; {} prompt and {} generated tokens ({:.1f} tokens/s in all, {:.1f} generated/s)\n",
                  r.seconds, r.prompt_tokens, r.generated_tokens, r.seconds > 0 ? total / r.seconds : 0.0,
                  r.seconds > 0 ? r.generated_tokens / r.seconds : 0.0);
  if (run.contains("threads")) out += fmt::format("- threads: {}\n", text("threads"));
  if (run.contains("products")) out += fmt::format("- products of BF16 weights: {}\n", text("products"));
  return out;
}

void write_eval_outputs(const std::string& dir, const EvalResult& r, const RecordSet& data, const Json& run) {
  make_directories(dir);
  write_file_atomic(dir + "/results.json", results_json(r, data, run).dump(2) + "\n");
  write_file_atomic(dir + "/results.md", results_markdown(r, data, run));
  write_file_atomic(dir + "/examples.jsonl", [&r](std::FILE* f) {
    for (const Json& e : r.examples) {
      const std::string line = e.dump() + "\n";
      std::fwrite(line.data(), 1, line.size(), f);
    }
  });
}

std::vector<BatchBenchResult> bench_batched_generation(const EvalModel& m, const std::vector<int>& batches,
                                                       int64_t n_prompt, int64_t n_gen, int repetitions,
                                                       const std::function<void(const std::string&)>& progress) {
  if (batches.empty()) fail("--bench-batch: expected a list of batch sizes");
  for (int b : batches)
    if (b < 1) fail("--bench-batch: expected batch sizes of at least 1, found {}", b);
  if (n_prompt < 1 || n_gen < 1) fail("bench: expected at least 1 prompt token and 1 generated token");
  if (repetitions < 1) fail("bench: expected at least 1 repetition");
  const LlamaConfig& cfg = m.model->config();
  const int64_t V = cfg.vocab_size;
  const int64_t warm_steps = 4;
  const int64_t context = n_prompt + std::max(n_gen, warm_steps);
  // Random prompts (ids of the whole vocabulary, seeded): the weights are random too.
  std::mt19937_64 rng(1);
  std::uniform_int_distribution<int32_t> any_id(0, static_cast<int32_t>(V - 1));
  const int most = *std::max_element(batches.begin(), batches.end());
  std::vector<std::vector<int32_t>> prompts(most, std::vector<int32_t>(n_prompt));
  for (auto& p : prompts)
    for (auto& id : p) id = any_id(rng);
  std::vector<std::unique_ptr<Forward>> forwards;
  for (int b : batches)
    forwards.push_back(std::make_unique<Forward>(*m.model, *m.pool, context, m.adapter, m.layers, b));

  struct Pass {
    double step_ms, prefill_tps, sync;
  };
  // One pass at batch size b: prefill the b prompts together, then `steps` greedy decode steps of all b.
  auto pass = [&](Forward& f, int b, int64_t steps) {
    f.reset();
    std::vector<Forward::Chunk> chunks;
    for (int i = 0; i < b; ++i) chunks.push_back({i, prompts[i].data(), n_prompt});
    double t = now_seconds();
    const float* logits = f.forward_batch(chunks, false);
    const double prefill_s = now_seconds() - t;
    std::vector<int32_t> next(b);
    for (int i = 0; i < b; ++i) next[i] = argmax(logits + static_cast<int64_t>(i) * V, V);
    std::vector<double> step_s;
    double sync = 0;
    for (int64_t k = 0; k < steps; ++k) {
      for (int i = 0; i < b; ++i) chunks[i] = {i, &next[i], 1};
      t = now_seconds();
      logits = f.forward_batch(chunks, false);
      for (int i = 0; i < b; ++i) next[i] = argmax(logits + static_cast<int64_t>(i) * V, V);
      step_s.push_back(now_seconds() - t);
      sync = static_cast<double>(f.last_sync_points());
    }
    return Pass{median(step_s) * 1e3, static_cast<double>(b) * n_prompt / prefill_s, sync};
  };
  const size_t nb = batches.size();
  for (size_t i = 0; i < nb; ++i) {
    if (progress) progress(fmt::format("warm-up, batch {}", batches[i]));
    pass(*forwards[i], batches[i], warm_steps);
  }
  std::vector<std::vector<Pass>> passes(nb);
  for (int rep = 0; rep < repetitions; ++rep)
    for (size_t k = 0; k < nb; ++k) {
      const size_t i = (k + static_cast<size_t>(rep)) % nb;
      if (progress) progress(fmt::format("repetition {}/{}, batch {}", rep + 1, repetitions, batches[i]));
      passes[i].push_back(pass(*forwards[i], batches[i], n_gen));
    }
  std::vector<BatchBenchResult> out;
  for (size_t i = 0; i < nb; ++i) {
    BatchBenchResult res;
    res.batch = batches[i];
    res.n_prompt = n_prompt;
    res.n_gen = n_gen;
    std::vector<double> prefill;
    for (const Pass& p : passes[i]) {
      res.step_samples_ms.push_back(p.step_ms);
      prefill.push_back(p.prefill_tps);
      res.sync_points_per_step = p.sync;
    }
    res.step_ms = median(res.step_samples_ms);
    res.tokens_per_s = res.batch / (res.step_ms / 1e3);
    res.prefill_tokens_per_s = median(prefill);
    out.push_back(res);
  }
  return out;
}

}  // namespace flora::eval
