// Tokenizer throughput (Google Benchmark): the real Llama 3 tokenizer.json on
// about 3 MB of mixed text, once as ordinary prose and once as the long runs
// of one character class that stress the pre-tokenizer regex and the BPE
// merge loop. Built as build/bench_tokenizer (not a test: speed is never
// asserted in the suite). Run after scripts/setup.sh has fetched the tokenizer:
//
//   ./build/bench_tokenizer [--benchmark_repetitions=5]
#include <benchmark/benchmark.h>

#include <cstdio>
#include <fmt/format.h>
#include <string>

#include "tokenizer/bpe_train.h"
#include "tokenizer/tokenizer.h"
#include "util/file.h"

namespace {

const char* const kLlama3Json = FLORA_SOURCE_DIR "/.deps/llama3/tokenizer.json";

const flora::Tokenizer* llama3() {
  static const flora::Tokenizer* t = [] {
    return flora::file_exists(kLlama3Json) ? new flora::Tokenizer(flora::Tokenizer::from_file(kLlama3Json)) : nullptr;
  }();
  return t;
}

std::string prose() {
  std::string text;
  for (int i = 0; text.size() < 3'000'000; ++i) {
    text += fmt::format("Paragraph {} ({:x}):\n", i, i * 2654435761u);
    text += flora::tiny_tokenizer_corpus();
  }
  return text;
}

std::string long_runs() {
  std::string text = std::string(200'000, 'a') + std::string(200'000, ' ') + "end" + std::string(100'000, '\n');
  text += std::string(100'000, '!') + std::string(100'000, '7') + " x";
  for (int i = 0; i < 50'000; ++i) text += "\r\n";
  for (int i = 0; i < 50'000; ++i) text += "\xE6\x97\xA5";  // U+65E5, a CJK letter
  return text;
}

void encode(benchmark::State& state, const std::string& text) {
  const flora::Tokenizer* t = llama3();
  if (!t) {
    state.SkipWithError("no .deps/llama3/tokenizer.json: run scripts/setup.sh");
    return;
  }
  size_t tokens = 0;
  for (auto _ : state) {
    const auto ids = t->encode(text, false);
    tokens = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["tokens"] = static_cast<double>(tokens);
}

void BM_EncodeProse(benchmark::State& state) {
  static const std::string text = prose();
  encode(state, text);
}
void BM_EncodeLongRuns(benchmark::State& state) {
  static const std::string text = long_runs();
  encode(state, text);
}
BENCHMARK(BM_EncodeProse)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EncodeLongRuns)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
