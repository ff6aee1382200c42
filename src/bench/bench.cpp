#include "bench/bench.h"

#include <algorithm>
#include <random>

#include "model/forward.h"
#include "model/sampler.h"
#include "ops/ops.h"
#include "util/error.h"
#include "util/timer.h"

namespace flora {

Json BenchResult::to_json() const {
  return Json{{"test", test},
              {"n_tokens", n_tokens},
              {"ms_per_token", ms_per_token},
              {"tokens_per_s", tokens_per_s},
              {"bandwidth_gbs", bandwidth_gbs},
              {"bandwidth_limit_ms", bandwidth_limit_ms},
              {"roofline_ratio", roofline_ratio},
              {"sync_points_per_token", sync_points_per_token},
              {"samples_ms", samples_ms}};
}

BandwidthProbe::BandwidthProbe(ThreadPool& pool, size_t bytes)
    : pool_(pool), buffer_(bytes, /*huge_pages=*/true), n_(static_cast<int64_t>(bytes / sizeof(float))) {
  // Touch every page now so that the measurement reads memory, not page faults.
  float* x = reinterpret_cast<float*>(buffer_.data());
  pool_.parallel_for(n_, 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) x[i] = static_cast<float>(i & 1023);
  });
}

double BandwidthProbe::measure_warm(int passes) {
  std::vector<double> v;
  for (int i = 0; i < passes; ++i) v.push_back(measure());
  v.erase(v.begin());
  return median(v);
}

double BandwidthProbe::measure() {
  const int64_t n = n_;
  const float* x = reinterpret_cast<const float*>(buffer_.data());
  std::vector<float> partial(pool_.size());
  const double t0 = now_seconds();
  pool_.run([&](int t, int nt) {
    const int64_t b = n * t / nt, e = n * (t + 1) / nt;
    partial[t] = ops::sum(x + b, e - b);
  });
  const double dt = now_seconds() - t0;
  // The sum is used so the reads cannot be optimised away.
  volatile float sink = 0;
  for (float p : partial) sink = sink + p;
  return static_cast<double>(n) * sizeof(float) / dt / 1e9;
}

std::vector<BenchResult> run_bench(const LlamaModel& model, ThreadPool& pool, const BenchOptions& o,
                                   const BenchProgress& progress) {
  const LlamaConfig& cfg = model.config();
  if (o.repetitions < 1) fail("bench: repetitions must be at least 1, got {}", o.repetitions);
  if (o.n_prompt < 0 || o.n_gen < 0 || o.n_prompt + o.n_gen == 0) fail("bench: nothing to measure (-p and -n are 0)");
  // Room for the untimed warm-up steps too.
  const int64_t context = std::min(std::max({o.n_prompt, o.n_gen, kWarmupSteps}), cfg.max_position_embeddings);
  Forward forward(model, pool, context);
  BandwidthProbe probe(pool, o.bandwidth_bytes);
  std::mt19937 rng(static_cast<uint32_t>(o.seed));
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(cfg.vocab_size - 1));
  std::vector<int32_t> prompt(o.n_prompt);
  for (auto& t : prompt) t = token(rng);
  const double weight_bytes = static_cast<double>(model.decode_weight_bytes());

  // Memory that has not been touched for a while reads slowly here at first
  // (the first pass after switching between the probe buffer and the weights
  // runs at a few GB/s on these virtual machines), so every measurement is
  // preceded by an untimed pass over the same memory: a probe pass, or decode
  // steps that read every weight.
  const int32_t warm_token = token(rng);
  auto warm_weights = [&](int steps) {
    forward.reset();
    for (int i = 0; i < steps; ++i) forward.forward(&warm_token, 1, false);
  };
  progress("warm-up");
  warm_weights(4);

  std::vector<double> pp_ms, pp_bw, tg_ms, tg_bw, tg_ratio;
  double pp_sync = 0, tg_sync = 0;
  for (int rep = 0; rep < o.repetitions; ++rep) {
    const double bw_before = probe.measure_warm();
    if (o.n_prompt > 0) {
      progress(fmt::format("repetition {}/{}: pp{}", rep + 1, o.repetitions, o.n_prompt));
      warm_weights(2);
      forward.reset();
      const double t0 = now_seconds();
      forward.forward(prompt.data(), o.n_prompt, false);
      pp_ms.push_back((now_seconds() - t0) * 1e3 / static_cast<double>(o.n_prompt));
      pp_sync = static_cast<double>(forward.last_sync_points()) / static_cast<double>(o.n_prompt);
    }
    const double bw_mid = probe.measure_warm();
    if (o.n_prompt > 0) pp_bw.push_back((bw_before + bw_mid) / 2);
    if (o.n_gen > 0) {
      progress(fmt::format("repetition {}/{}: tg{}", rep + 1, o.repetitions, o.n_gen));
      warm_weights(3);
      forward.reset();
      int32_t next = token(rng);
      uint64_t syncs = 0;
      const double t0 = now_seconds();
      for (int64_t i = 0; i < o.n_gen; ++i) {
        const float* logits = forward.forward(&next, 1, false);
        syncs += forward.last_sync_points();
        next = argmax(logits, cfg.vocab_size);  // fails on NaN logits, as generation does
      }
      const double ms = (now_seconds() - t0) * 1e3 / static_cast<double>(o.n_gen);
      const double bw = (bw_mid + probe.measure_warm()) / 2;
      tg_ms.push_back(ms);
      tg_bw.push_back(bw);
      tg_ratio.push_back(ms / (weight_bytes / bw / 1e6));
      tg_sync = static_cast<double>(syncs) / static_cast<double>(o.n_gen);
    }
  }

  std::vector<BenchResult> results;
  auto summarise = [&](const std::string& name, int64_t n, const std::vector<double>& ms, const std::vector<double>& bw,
                       double tokens_per_weight_read, double sync, const std::vector<double>* ratios) {
    BenchResult r;
    r.test = name;
    r.n_tokens = n;
    r.samples_ms = ms;
    r.ms_per_token = median(ms);
    r.tokens_per_s = 1e3 / r.ms_per_token;
    r.bandwidth_gbs = median(bw);
    r.bandwidth_limit_ms = weight_bytes / (r.bandwidth_gbs * 1e9) * 1e3 / tokens_per_weight_read;
    if (ratios) {
      r.roofline_ratio = median(*ratios);
    } else {
      std::vector<double> q;
      for (size_t i = 0; i < ms.size(); ++i)
        q.push_back(ms[i] / (weight_bytes / (bw[i] * 1e9) * 1e3 / tokens_per_weight_read));
      r.roofline_ratio = median(q);
    }
    r.sync_points_per_token = sync;
    results.push_back(r);
  };
  if (o.n_prompt > 0)
    summarise(fmt::format("pp{}", o.n_prompt), o.n_prompt, pp_ms, pp_bw, static_cast<double>(o.n_prompt), pp_sync,
              nullptr);
  if (o.n_gen > 0) summarise(fmt::format("tg{}", o.n_gen), o.n_gen, tg_ms, tg_bw, 1.0, tg_sync, &tg_ratio);
  return results;
}

std::unique_ptr<AttachedAdapter> make_random_adapter(const LlamaModel& model, const std::string& variant, int64_t rank,
                                                     double alpha, DType dtype, uint64_t seed) {
  AdapterConfig cfg = AdapterConfig::preset(variant, rank, alpha > 0 ? alpha : 1.0);
  cfg.init = AdapterInit::Random;
  if (alpha <= 0) cfg.alpha = 2.0 * static_cast<double>(cfg.rank);
  return std::make_unique<AttachedAdapter>(model, Adapter::create(cfg, model.config(), seed), cfg.lora_execution,
                                           dtype);
}

BenchVariant bench_variant(const AttachedAdapter& a, DType dtype) {
  const Adapter& ad = a.adapter();
  // A merged LoRA (no exec, replacement layers) reads the base's bytes and none of its own.
  const size_t bytes =
      a.exec() ? static_cast<size_t>(ad.parameter_count()) * (dtype == DType::BF16 ? 2 : 4) : size_t{0};
  return {a.variant(), a.exec(), a.layers(), ad.config.rank, ad.parameter_count(), bytes};
}

void warm_until_steady(const std::function<void()>& step) {
  double last = 1e30;
  for (int64_t i = 0; i < kWarmupSteps; ++i) {
    const double t0 = now_seconds();
    step();
    const double dt = now_seconds() - t0;
    if (i >= 2 && dt < 1.1 * last && last < 1.1 * dt) break;
    last = dt;
  }
}

Json VariantResult::to_json() const {
  return Json{{"variant", variant},
              {"rank", rank},
              {"adapter_params", adapter_params},
              {"adapter_bytes", adapter_bytes},
              {"ttft_ms", ttft_ms},
              {"tpot_ms", tpot_ms},
              {"overhead_pct", overhead_pct},
              {"ttft_overhead_pct", ttft_overhead_pct},
              {"sync_points_per_token", sync_points_per_token},
              {"tpot_samples_ms", tpot_samples_ms},
              {"bandwidth_gbs", bandwidth_gbs},
              {"bandwidth_limit_ms", bandwidth_limit_ms},
              {"roofline_ratio", roofline_ratio}};
}

std::vector<VariantResult> run_variant_bench(const LlamaModel& model, ThreadPool& pool,
                                             const std::vector<BenchVariant>& variants, const BenchOptions& o,
                                             const BenchProgress& progress) {
  if (variants.empty() || variants[0].exec || variants[0].layers) fail("bench: the first variant must be the base");
  if (o.n_prompt < 1 || o.n_gen < 1) fail("bench --variants: -p and -n must both be at least 1");
  const LlamaConfig& cfg = model.config();
  const size_t n = variants.size();
  std::mt19937 rng(static_cast<uint32_t>(o.seed));
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(cfg.vocab_size - 1));
  std::vector<int32_t> prompt(o.n_prompt);
  for (auto& t : prompt) t = token(rng);
  std::vector<std::vector<double>> ttft(n), tpot(n);
  std::vector<double> syncs(n);
  BandwidthProbe probe(pool, o.bandwidth_bytes);
  std::vector<double> bandwidth = {probe.measure_warm()};
  for (int rep = 0; rep < o.repetitions; ++rep) {
    for (size_t k = 0; k < n; ++k) {
      const size_t v = (k + static_cast<size_t>(rep)) % n;
      const BenchVariant& bv = variants[v];
      progress(fmt::format("repetition {}/{}: {}", rep + 1, o.repetitions, bv.name));
      Forward f(model, pool, std::min(std::max(o.n_prompt + o.n_gen, kWarmupSteps), cfg.max_position_embeddings),
                bv.exec, bv.layers);
      warm_until_steady([&] { f.forward(&prompt[0], 1, false); });
      f.reset();
      double t0 = now_seconds();
      const float* logits = f.forward(prompt.data(), o.n_prompt, false);
      int32_t next = argmax(logits, cfg.vocab_size);
      ttft[v].push_back((now_seconds() - t0) * 1e3);
      uint64_t sync = 0;
      std::vector<double> steps;
      for (int64_t i = 0; i < o.n_gen; ++i) {
        t0 = now_seconds();
        logits = f.forward(&next, 1, false);
        next = argmax(logits, cfg.vocab_size);
        steps.push_back((now_seconds() - t0) * 1e3);
        sync += f.last_sync_points();
      }
      // The median step, as `flora generate` reports TPOT: a stall of the host
      // (hundreds of ms, see docs/benchmarks.md) would otherwise decide a mean.
      tpot[v].push_back(median(steps));
      syncs[v] = static_cast<double>(sync) / static_cast<double>(o.n_gen);
    }
    bandwidth.push_back(probe.measure_warm());
  }
  const double gbs = median(bandwidth);
  std::vector<VariantResult> results;
  for (size_t v = 0; v < n; ++v) {
    VariantResult r;
    r.variant = variants[v].name;
    r.rank = variants[v].rank;
    r.adapter_params = variants[v].adapter_params;
    r.adapter_bytes = variants[v].adapter_bytes;
    r.ttft_ms = median(ttft[v]);
    r.tpot_ms = median(tpot[v]);
    r.tpot_samples_ms = tpot[v];
    std::vector<double> ratio, ttft_ratio;
    for (size_t i = 0; i < tpot[v].size(); ++i) {
      ratio.push_back(tpot[v][i] / tpot[0][i]);
      ttft_ratio.push_back(ttft[v][i] / ttft[0][i]);
    }
    r.overhead_pct = (median(ratio) - 1.0) * 100.0;
    r.ttft_overhead_pct = (median(ttft_ratio) - 1.0) * 100.0;
    r.sync_points_per_token = syncs[v];
    r.bandwidth_gbs = gbs;
    const double bytes = static_cast<double>(model.decode_weight_bytes() + variants[v].adapter_bytes);
    r.bandwidth_limit_ms = bytes / (gbs * 1e9) * 1e3;
    r.roofline_ratio = r.tpot_ms / r.bandwidth_limit_ms;
    results.push_back(r);
  }
  return results;
}

}  // namespace flora
