// The quantized matrix kernels (issue 13) against BF16 (Google Benchmark):
// ops::matmul_rows over the Llama-3.2-1B gate projection's shape (8192 x 2048),
// decode (T = 1) and a prefill chunk (T = 64), per format, on 1 and 2 threads
// (each thread its half of the rows, as the forward splits them). The weights
// are a ring of matrices of 256 MiB or more in all, every iteration the next
// one, so decode reads them from memory as a forward pass does, never from the
// 32 MiB L3. Counters: bytes_per_second is the rate of the weight bytes read
// (blocks, scales included); the bandwidth bench (Sum) beside it reads f32;
// LlamaCppDecode runs llama.cpp's own decode kernels on the same matrices.
// The 1B model reads about 73.7 such matrices' worth of weights per token.
// Built as build/bench_quant (speed is never asserted in the suite):
//
//   for i in 1 2 3 4 5; do ./build/bench_quant --benchmark_format=csv; done   (rounds interleave the runs;
//   take each benchmark's median over the rounds: docs/benchmarks.md)
//   FLORA_CPU=avx2 ./build/bench_quant   (the AVX2 code on an AVX-512 host)
#include <benchmark/benchmark.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ops/formats.h"
#include "ops/ops.h"
#include "ops/quant.h"
#include "util/dtype.h"

namespace {

using flora::DType;
using flora::MatrixRef;

constexpr int64_t kRows = 8192, kCols = 2048;
constexpr size_t kRingBytes = size_t{256} << 20;

// A ring of random (kRows, kCols) matrices of `dtype`, together at least kRingBytes.
struct Ring {
  std::vector<std::vector<uint8_t>> data;
  std::vector<MatrixRef> matrices;
  size_t matrix_bytes = 0;
};

const Ring& ring(DType dtype) {
  static std::map<DType, std::unique_ptr<Ring>> rings;
  std::unique_ptr<Ring>& r = rings[dtype];
  if (r) return *r;
  r = std::make_unique<Ring>();
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> row(kCols);
  r->matrix_bytes = flora::quantized_bytes(dtype, kCols) * kRows;
  const size_t count = std::max<size_t>(2, (kRingBytes + r->matrix_bytes - 1) / r->matrix_bytes);
  // One matrix quantized, the others copies: the values do not change the speed.
  std::vector<uint8_t> first(r->matrix_bytes);
  const size_t row_bytes = flora::quantized_bytes(dtype, kCols);
  for (int64_t i = 0; i < kRows; ++i) {
    for (float& v : row) v = normal(rng);
    flora::quantize_row(dtype, row.data(), kCols, first.data() + i * row_bytes);
  }
  for (size_t i = 0; i < count; ++i) {
    r->data.push_back(first);
    r->matrices.push_back(MatrixRef{r->data.back().data(), dtype, kRows, kCols, 0});
  }
  return *r;
}

// bf16_dot: BF16 weights through the BF16 dot products (ops::set_bf16_products).
void Product(benchmark::State& state, DType dtype, int64_t T, bool bf16_dot) {
  flora::ops::set_bf16_products(bf16_dot);
  if (bf16_dot && !flora::ops::bf16_products_active(dtype)) {
    state.SkipWithError("no BF16 dot products here (AVX512_BF16 and the AVX-512 target)");
    return;
  }
  const Ring& r = ring(dtype);
  std::vector<float> x(T * kCols, 0.5f), y(T * kRows);
  const int64_t n = state.threads(), i = state.thread_index();
  const int64_t row0 = kRows * i / n, row1 = kRows * (i + 1) / n;
  size_t next = static_cast<size_t>(i);
  for (auto _ : state) {
    const MatrixRef& w = r.matrices[next];
    next = (next + 1) % r.matrices.size();
    flora::ops::matmul_rows(y.data(), kRows, x.data(), kCols, T, w, row0, row1, false);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(r.matrix_bytes) / n);
  state.SetLabel(bf16_dot ? "AVX512_BF16" : flora::ops::simd_target_name());
  flora::ops::set_bf16_products(false);
}

// llama.cpp's own decode kernel on the same ring, for the comparison: ggml's
// CPU backend (the libggml-cpu-<cpu>.so that node-llama-cpp ships, scripts/
// setup.sh) quantizes the token to Q8_0 (Q8_K for the K-quants) blocks and
// takes each row's integer dot product with ggml_vec_dot_<type>_q8_<0|K>, as
// its mul_mat does for one token. Absent libraries: the benchmark says so.
struct GgmlCpu {
  using VecDot = void (*)(int, float*, size_t, const void*, size_t, const void*, size_t, int);
  using QuantizeRow = void (*)(const float*, void*, int64_t);
  void* handle = nullptr;
  VecDot dot[4] = {};
  QuantizeRow q8_0 = nullptr, q8_k = nullptr;
};

const GgmlCpu* ggml_cpu(const std::string& variant) {
  static std::map<std::string, std::unique_ptr<GgmlCpu>> libs;
  auto& lib = libs[variant];
  if (lib) return lib->handle ? lib.get() : nullptr;
  lib = std::make_unique<GgmlCpu>();
  const std::string dir = FLORA_SOURCE_DIR "/.deps/npm/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/";
  // RTLD_GLOBAL: the CPU backend resolves its libggml-base symbols by name.
  if (!dlopen((dir + "libggml-base.so").c_str(), RTLD_NOW | RTLD_GLOBAL)) return nullptr;
  void* h = dlopen((dir + "libggml-cpu-" + variant + ".so").c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) return nullptr;
  if (auto init = reinterpret_cast<void (*)()>(dlsym(h, "ggml_cpu_init"))) init();  // its f16 tables
  const char* names[] = {"ggml_vec_dot_q8_0_q8_0", "ggml_vec_dot_q4_0_q8_0", "ggml_vec_dot_q4_K_q8_K",
                         "ggml_vec_dot_q6_K_q8_K"};
  for (int i = 0; i < 4; ++i) lib->dot[i] = reinterpret_cast<GgmlCpu::VecDot>(dlsym(h, names[i]));
  lib->q8_0 = reinterpret_cast<GgmlCpu::QuantizeRow>(dlsym(h, "quantize_row_q8_0"));
  lib->q8_k = reinterpret_cast<GgmlCpu::QuantizeRow>(dlsym(h, "quantize_row_q8_K"));
  lib->handle = h;
  return lib.get();
}

void LlamaCppDecode(benchmark::State& state, DType dtype, std::string variant) {
  const GgmlCpu* g = ggml_cpu(variant);
  const int index = dtype == DType::Q8_0 ? 0 : dtype == DType::Q4_0 ? 1 : dtype == DType::Q4_K ? 2 : 3;
  if (!g || !g->dot[index] || !g->q8_0 || !g->q8_k) {
    state.SkipWithError("llama.cpp's libggml-cpu is not installed (scripts/setup.sh)");
    return;
  }
  const Ring& r = ring(dtype);
  const bool k_quant = dtype == DType::Q4_K || dtype == DType::Q6_K;
  std::vector<float> x(kCols, 0.5f), y(kRows);
  std::vector<uint8_t> xq(kCols / 256 * 292 + kCols / 32 * 34);  // Q8_K (292 bytes per 256) or Q8_0 blocks
  const int64_t n = state.threads(), i = state.thread_index();
  const int64_t row0 = kRows * i / n, row1 = kRows * (i + 1) / n;
  const size_t row_bytes = flora::quantized_bytes(dtype, kCols);
  size_t next = static_cast<size_t>(i);
  for (auto _ : state) {
    const auto* w = static_cast<const uint8_t*>(r.matrices[next].data);
    next = (next + 1) % r.matrices.size();
    (k_quant ? g->q8_k : g->q8_0)(x.data(), xq.data(), kCols);
    for (int64_t row = row0; row < row1; ++row)
      g->dot[index](static_cast<int>(kCols), &y[row], 0, w + row * row_bytes, 0, xq.data(), 0, 1);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(r.matrix_bytes) / n);
  state.SetLabel("llama.cpp " + variant);
}

// The bandwidth of f32 reads on the same ring size, for the ratio.
void Bandwidth(benchmark::State& state) {
  const size_t n = kRingBytes / 4 / state.threads();
  static std::vector<float> data(kRingBytes / 4, 1.0f);
  const float* x = data.data() + n * state.thread_index();
  for (auto _ : state) benchmark::DoNotOptimize(flora::ops::sum(x, static_cast<int64_t>(n)));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n * 4));
}

// Fixed counts, about half a second each, so that every round costs the same.
constexpr int kDecodeIterations = 600, kPrefillIterations = 40;

void Register() {
  for (DType dtype : {DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K}) {
    const std::string name(flora::dtype_name(dtype));
    for (int threads : {1, 2}) {
      for (bool bf16_dot : {false, true}) {
        if (bf16_dot && dtype != DType::BF16) continue;
        const std::string suffix = bf16_dot ? "-dot" : "";
        benchmark::RegisterBenchmark(("Decode/" + name + suffix).c_str(), Product, dtype, 1, bf16_dot)
            ->Threads(threads)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond)
            ->Iterations(kDecodeIterations);
      }
      if (dtype != DType::BF16)
        for (const char* variant : {"zen4", "haswell"})  // AVX-512 VNNI, AVX2
          benchmark::RegisterBenchmark(("LlamaCppDecode/" + name + "/" + variant).c_str(), LlamaCppDecode, dtype,
                                       std::string(variant))
              ->Threads(threads)
              ->UseRealTime()
              ->Unit(benchmark::kMillisecond)
              ->Iterations(kDecodeIterations);
      for (bool bf16_dot : {false, true}) {
        if (bf16_dot && dtype != DType::BF16) continue;
        const std::string suffix = bf16_dot ? "-dot" : "";
        benchmark::RegisterBenchmark(("Prefill64/" + name + suffix).c_str(), Product, dtype, 64, bf16_dot)
            ->Threads(threads)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond)
            ->Iterations(kPrefillIterations);
      }
    }
  }
  benchmark::RegisterBenchmark("Bandwidth/F32", Bandwidth)->Threads(1)->Threads(2)->UseRealTime()->Iterations(100);
}

}  // namespace

int main(int argc, char** argv) {
  Register();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
