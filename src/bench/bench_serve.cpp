#include "bench/bench_serve.h"

#include <algorithm>
#include <memory>
#include <random>
#include <set>

#include "model/forward.h"
#include "serve/adapter_loader.h"
#include "serve/scheduler.h"
#include "util/error.h"
#include "util/timer.h"

namespace flora {

Json ServeResult::to_json() const {
  return Json{{"config", config},
              {"streams", streams},
              {"adapters", adapters},
              {"decode_steps", decode_steps},
              {"tpot_ms", tpot_ms},
              {"tokens_per_s", tokens_per_s},
              {"overhead_pct", overhead_pct},
              {"bandwidth_gbs", bandwidth_gbs},
              {"weight_bytes", weight_bytes},
              {"bandwidth_limit_ms", bandwidth_limit_ms},
              {"roofline_ratio", roofline_ratio},
              {"sync_points_per_step", sync_points_per_step},
              {"tpot_samples_ms", tpot_samples_ms},
              {"bandwidth_samples_gbs", bandwidth_samples_gbs}};
}

namespace {

const AdapterExec* adapter_of(const ServeConfig& c, int stream) {
  return c.adapters.empty() ? nullptr : c.adapters[static_cast<size_t>(stream) % c.adapters.size()].exec;
}

// Bytes of the distinct adapters that the first n streams run.
double adapter_bytes(const ServeConfig& c, int n) {
  std::set<const AdapterExec*> seen;
  double bytes = 0;
  for (int i = 0; i < n && !c.adapters.empty(); ++i) {
    const BenchVariant& v = c.adapters[static_cast<size_t>(i) % c.adapters.size()];
    if (seen.insert(v.exec).second) bytes += static_cast<double>(v.adapter_bytes);
  }
  return bytes;
}

// One run's figures.
struct Run {
  double tpot_s = 0, bandwidth_gbs = 0, sync_points = 0;
  int64_t steps = 0, adapters = 0;
};

}  // namespace

std::vector<ServeResult> run_serve_bench(const LlamaModel& model, ThreadPool& pool, const Tokenizer& tokenizer,
                                         const std::vector<ServeConfig>& configs, const std::vector<int>& streams,
                                         const BenchOptions& o, const BenchProgress& progress) {
  if (configs.empty() || !configs[0].adapters.empty()) fail("bench --serve: the first configuration must be the base");
  for (const auto& c : configs)
    for (const auto& a : c.adapters) {
      if (a.layers) fail("bench --serve: {} ({}): {}", c.name, a.name, serve::merged_lora_refusal());
      if (!a.exec) fail("bench --serve: {}: an adapter without an AdapterExec", c.name);
    }
  if (streams.empty()) fail("bench --serve: expected a list of stream counts");
  for (int n : streams)
    if (n < 1) fail("bench --serve: expected stream counts of at least 1, found {}", n);
  if (o.n_prompt < 1) fail("bench --serve: -p must be at least 1 (each stream's prompt), got {}", o.n_prompt);
  // The first token comes from the prefill step; decode steps begin with the second.
  if (o.n_gen < 2) fail("bench --serve: -n must be at least 2 (tokens per stream), got {}", o.n_gen);
  if (o.repetitions < 1) fail("bench: repetitions must be at least 1, got {}", o.repetitions);
  const LlamaConfig& cfg = model.config();
  if (o.n_prompt + o.n_gen > cfg.max_position_embeddings)
    fail("bench --serve: -p + -n is {} tokens: expected at most the model's context, {}", o.n_prompt + o.n_gen,
         cfg.max_position_embeddings);

  const int most = *std::max_element(streams.begin(), streams.end());
  const int64_t context = std::min(std::max(o.n_prompt + o.n_gen, kWarmupSteps), cfg.max_position_embeddings);
  Forward forward(model, pool, context, nullptr, nullptr, most);
  BandwidthProbe probe(pool, o.bandwidth_bytes);
  std::mt19937 rng(static_cast<uint32_t>(o.seed));
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(cfg.vocab_size - 1));
  std::vector<std::vector<int32_t>> prompts(most, std::vector<int32_t>(o.n_prompt));
  for (auto& p : prompts)
    for (auto& t : p) t = token(rng);

  auto run = [&](const ServeConfig& c, int n) {
    Run r;
    const double bw_before = probe.measure_warm();
    std::vector<Forward::Chunk> rows;
    for (int i = 0; i < n; ++i) rows.push_back({i, prompts[i].data(), 1, adapter_of(c, i)});
    forward.reset();
    warm_until_steady([&] { forward.forward_batch(rows, false); });
    forward.reset();

    serve::SchedulerOptions so;
    so.max_queue = n;
    so.max_prefill_tokens = n * o.n_prompt;  // every prompt in the first step: lockstep from there on
    so.step_history = static_cast<size_t>(o.n_gen) + 16;
    serve::Scheduler sched(forward, tokenizer, so);
    std::vector<std::shared_ptr<serve::Request>> requests(n);
    for (int i = 0; i < n; ++i) {
      serve::RequestParams p;
      p.prompt = prompts[i];
      p.adapter = adapter_of(c, i);
      p.max_tokens = o.n_gen;  // no stop_ids: random weights may choose eos, and every stream must run n tokens
      if (sched.submit(std::move(p), requests[i]) != serve::Admission::kAccepted)
        fail("bench --serve: {} x {} streams: request {} was not accepted", c.name, n, i + 1);
    }
    sched.start();
    for (int i = 0; i < n; ++i) {
      const serve::RequestResult res = requests[i]->wait();
      if (res.finish == serve::FinishReason::kError) fail("bench --serve: {}: {}", c.name, res.error);
      if (res.completion_tokens != o.n_gen)
        fail("bench --serve: {}: stream {} generated {} tokens, expected {}", c.name, i + 1, res.completion_tokens,
             o.n_gen);
    }
    sched.stop(std::chrono::milliseconds(0));
    const double bw_after = probe.measure_warm();

    std::vector<double> seconds, syncs;
    for (const serve::StepRecord& s : sched.recent_steps()) {
      if (s.decode_rows != n || s.prefill_rows != 0) continue;
      seconds.push_back(s.seconds);
      syncs.push_back(static_cast<double>(s.sync_points));
      r.adapters = std::max(r.adapters, s.adapters);
    }
    if (seconds.empty()) fail("bench --serve: {}: no step ran all {} streams decoding", c.name, n);
    // The median step: a stall of the host (hundreds of ms here) would decide a mean.
    r.tpot_s = median(seconds);
    r.sync_points = median(syncs);
    r.steps = static_cast<int64_t>(seconds.size());
    r.bandwidth_gbs = (bw_before + bw_after) / 2;
    return r;
  };

  const size_t nc = configs.size(), ns = streams.size();
  std::vector<std::vector<std::vector<Run>>> runs(ns, std::vector<std::vector<Run>>(nc));  // [streams][config][rep]
  progress("warm-up");
  probe.measure_warm();
  for (int rep = 0; rep < o.repetitions; ++rep)
    for (size_t si = 0; si < ns; ++si)
      for (size_t k = 0; k < nc; ++k) {
        const size_t c = (k + static_cast<size_t>(rep)) % nc;
        progress(fmt::format("repetition {}/{}: {} streams, {}", rep + 1, o.repetitions, streams[si], configs[c].name));
        runs[si][c].push_back(run(configs[c], streams[si]));
      }

  const double base_bytes = static_cast<double>(model.decode_weight_bytes());
  std::vector<ServeResult> results;
  for (size_t si = 0; si < ns; ++si)
    for (size_t c = 0; c < nc; ++c) {
      const auto& rs = runs[si][c];
      const auto& base = runs[si][0];
      ServeResult r;
      r.config = configs[c].name;
      r.streams = streams[si];
      r.weight_bytes = base_bytes + adapter_bytes(configs[c], streams[si]);
      r.decode_steps = rs[0].steps;
      std::vector<double> ratio, roofline;
      for (size_t i = 0; i < rs.size(); ++i) {
        r.tpot_samples_ms.push_back(rs[i].tpot_s * 1e3);
        r.bandwidth_samples_gbs.push_back(rs[i].bandwidth_gbs);
        r.decode_steps = std::min(r.decode_steps, rs[i].steps);
        ratio.push_back(rs[i].tpot_s / base[i].tpot_s);
        roofline.push_back(rs[i].tpot_s / (r.weight_bytes / (rs[i].bandwidth_gbs * 1e9)));
      }
      r.adapters = rs.back().adapters;
      r.sync_points_per_step = rs.back().sync_points;
      r.tpot_ms = median(r.tpot_samples_ms);
      r.tokens_per_s = static_cast<double>(r.streams) * 1e3 / r.tpot_ms;
      r.overhead_pct = (median(ratio) - 1.0) * 100.0;
      r.bandwidth_gbs = median(r.bandwidth_samples_gbs);
      r.bandwidth_limit_ms = r.weight_bytes / (r.bandwidth_gbs * 1e9) * 1e3;
      r.roofline_ratio = median(roofline);
      results.push_back(r);
    }
  return results;
}

}  // namespace flora
