// Counts of what `flora serve` did, written as Prometheus text (GET /metrics).
// No HTTP here: the server feeds it each request as it ends (whatever ended
// it: its last token, a stop, a client gone, the shutdown) and asks for the
// text; the gauges are read from the scheduler at that moment and passed in.
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "serve/scheduler.h"

namespace flora::serve {

class Metrics {
 public:
  // Upper bounds of the histograms' buckets, in seconds, ascending (+Inf is
  // added). The defaults are vLLM's, with finer ones below 10 ms, where a small
  // model's tokens land.
  static std::vector<double> default_ttft_buckets();
  static std::vector<double> default_tpot_buckets();
  Metrics(std::vector<double> ttft_buckets = default_ttft_buckets(),
          std::vector<double> tpot_buckets = default_tpot_buckets());

  // Makes a served model's series exist (at zero) before its first request,
  // so that a scrape shows every model and a rate() has a starting point.
  void add_model(const std::string& model);
  // A request of `model` ended. TTFT is observed when a token was chosen;
  // TPOT, the mean time per output token after the first, when two were.
  void record(const std::string& model, const RequestResult& result);
  // The exposition (text/plain; version=0.0.4), models in name order.
  std::string text(int64_t queue_depth, int64_t running) const;

 private:
  struct Histogram {
    std::vector<uint64_t> counts;  // per bucket, not cumulative; the last is +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  struct PerModel {
    std::map<std::string, uint64_t> requests;  // by finish reason
    uint64_t prompt_tokens = 0, generation_tokens = 0;
    Histogram ttft, tpot;
  };
  PerModel& model_locked(const std::string& model);

  const std::vector<double> ttft_buckets_, tpot_buckets_;
  mutable std::mutex mu_;
  std::map<std::string, PerModel> models_;
};

// A label value as the text format writes it: \, " and newline escaped.
std::string prometheus_label(const std::string& value);

}  // namespace flora::serve
