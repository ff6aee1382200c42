// Decode's weight read, outside the engine: does a row-interleaved ("panel")
// layout read faster than flora's row-major 4-row blocks? (issue 15, decode)
//
// One pass = what a decode step reads: for each of 16 layers q, k, v, o,
// gate, up (K = 2048) and down (K = 8192), then the 128256-row LM head, all
// BF16 in one huge-page buffer (2.47 GB at Llama-3.2-1B; 28 layers at
// K = 3072, 6.43 GB, at 3B). Two threads take 64-row chunks from
// an atomic counter and meet at a barrier after each matrix, as
// ops::product_region does. Every row keeps one accumulator chain of 16 lanes
// (the chain flora's kernel runs, so a layout change would not change a bit).
//   read loop:  the same chunks summed as floats (the bound on this machine)
//   rows4+pf:   flora's kernel: 4 rows at a time, row-major, the next block's
//               rows prefetched one line per row per 64 bytes
//   panel8 pfD: rows stored in panels of 8; per 32 elements of K, the 8 rows'
//               32 bf16 (64 bytes each) are adjacent, so a chunk is one
//               sequential stream, prefetched D bytes ahead (D = 0: none)
// Values do not matter for speed; the weights are a fixed pattern.
//
//   g++ -O2 -march=native -std=c++20 -pthread experiments/decode_layout.cpp -o /tmp/decode_layout
//   /tmp/decode_layout [chunk rows, default 64] [1b|3b, default 1b]
// Needs AVX-512 (the host kind of docs/benchmarks.md). Prints each case's
// median over 9 interleaved passes, and every pass.
#include <immintrin.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <thread>
#include <vector>

// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized on their own
// _mm512_undefined_*() operands (as in src/ops/bf16_kernels.cpp): a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

using u16 = uint16_t;

static inline __m512 widen(const u16* p) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}

static float read_loop(const u16* w, int64_t n) {  // n bf16 elements, read as floats
  const float* f = reinterpret_cast<const float*>(w);
  n /= 2;
  __m512 a = _mm512_setzero_ps(), b = a;
  for (int64_t i = 0; i < n; i += 32) {
    __builtin_prefetch(f + i + 1024, 0, 0);
    a = _mm512_add_ps(a, _mm512_loadu_ps(f + i));
    b = _mm512_add_ps(b, _mm512_loadu_ps(f + i + 16));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(a, b));
}

// Rows [r0, r1) of a row-major (rows, K) matrix: ops/kernels.cpp's T = 1 path.
static void rows4(const u16* w, int64_t K, int64_t r0, int64_t r1, const float* x, float* y) {
  for (int64_t r = r0; r + 4 <= r1; r += 4) {
    const u16* b = w + r * K;
    const u16* next = r + 8 <= r1 ? b + 4 * K : nullptr;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t k = 0; k < K; k += 16) {
      if (next && k % 32 == 0)
        for (int i = 0; i < 4; ++i) __builtin_prefetch(next + i * K + k, 0, 0);
      const __m512 xv = _mm512_loadu_ps(x + k);
      a0 = _mm512_fmadd_ps(widen(b + k), xv, a0);
      a1 = _mm512_fmadd_ps(widen(b + K + k), xv, a1);
      a2 = _mm512_fmadd_ps(widen(b + 2 * K + k), xv, a2);
      a3 = _mm512_fmadd_ps(widen(b + 3 * K + k), xv, a3);
    }
    y[r] = _mm512_reduce_add_ps(a0), y[r + 1] = _mm512_reduce_add_ps(a1);
    y[r + 2] = _mm512_reduce_add_ps(a2), y[r + 3] = _mm512_reduce_add_ps(a3);
  }
}

// Rows [r0, r1) (multiples of R) of a matrix stored in panels of R rows.
template <int R>
static void panel(const u16* w, int64_t K, int64_t r0, int64_t r1, const float* x, float* y, int64_t dist) {
  for (int64_t r = r0; r + R <= r1; r += R) {
    const u16* p = w + r * K;
    __m512 a[R];
    for (int i = 0; i < R; ++i) a[i] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 32) {
      const __m512 x0 = _mm512_loadu_ps(x + k), x1 = _mm512_loadu_ps(x + k + 16);
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i) {
        if (dist) __builtin_prefetch(reinterpret_cast<const char*>(p) + dist + i * 64, 0, 0);
        a[i] = _mm512_fmadd_ps(widen(p + i * 32), x0, a[i]);
        a[i] = _mm512_fmadd_ps(widen(p + i * 32 + 16), x1, a[i]);
      }
      p += R * 32;
    }
    for (int i = 0; i < R; ++i) y[r + i] = _mm512_reduce_add_ps(a[i]);
  }
}

struct Matrix {
  int64_t rows, K;
  const u16* w;
};
volatile float g_sink;

int main(int argc, char** argv) {
  const int64_t chunk = argc > 1 ? std::atoll(argv[1]) : 64;
  if (chunk <= 0 || chunk % 8) {
    std::fprintf(stderr, "decode_layout: chunk rows must be a positive multiple of 8, got %s\n", argv[1]);
    return 2;
  }
  const bool three_b = argc > 2 && std::string_view(argv[2]) == "3b";
  // (rows, K) of a decode step's reads, in order: Llama-3.2-1B, or 3B with "3b".
  const int64_t d = three_b ? 3072 : 2048, kv = three_b ? 1024 : 512, f = 8192, layers = three_b ? 28 : 16;
  std::vector<std::pair<int64_t, int64_t>> shapes;
  for (int64_t l = 0; l < layers; ++l)
    for (auto s : {std::pair<int64_t, int64_t>{d, d}, {kv, d}, {kv, d}, {d, d}, {f, d}, {f, d}, {d, f}})
      shapes.push_back(s);
  shapes.push_back({128256, d});
  int64_t bytes = 0;
  for (auto& s : shapes) bytes += s.first * s.second * 2;
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    std::perror("decode_layout: mmap");
    return 1;
  }
  madvise(mem, bytes, MADV_HUGEPAGE);
  u16* base = static_cast<u16*>(mem);
  for (int64_t i = 0; i < bytes / 2; ++i) base[i] = static_cast<u16>(0x3c00 + (i & 63));
  std::vector<Matrix> mats;
  for (const u16* p = base; auto& s : shapes) mats.push_back({s.first, s.second, p}), p += s.first * s.second;
  std::vector<float> x(f, 0.5f), y(128256);
  constexpr int kThreads = 2;

  // One pass of case `mode` (0 read loop, 1 rows4, 8 panel8), in ms.
  auto pass = [&](int mode, int64_t dist) {
    std::barrier sync(kThreads);
    std::vector<std::atomic<int64_t>> next(mats.size());
    for (auto& n : next) n = 0;
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
      threads.emplace_back([&] {
        for (size_t m = 0; m < mats.size(); ++m) {
          const Matrix& M = mats[m];
          for (int64_t c; (c = next[m].fetch_add(chunk)) < M.rows;) {
            const int64_t c1 = std::min(M.rows, c + chunk);
            if (mode == 0)
              g_sink = read_loop(M.w + c * M.K, (c1 - c) * M.K);
            else if (mode == 1)
              rows4(M.w, M.K, c, c1, x.data(), y.data());
            else
              panel<8>(M.w, M.K, c, c1, x.data(), y.data(), dist);
          }
          sync.arrive_and_wait();
        }
      });
    for (auto& t : threads) t.join();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() * 1e3;
  };
  struct Case {
    int mode;
    int64_t dist;
    const char* name;
  };
  const std::vector<Case> cases = {{0, 0, "read loop"},       {1, 0, "rows4+pf"},          {8, 0, "panel8 nopf"},
                                   {8, 512, "panel8 pf512"},  {8, 1024, "panel8 pf1k"},    {8, 2048, "panel8 pf2k"},
                                   {8, 4096, "panel8 pf4k"}};
  std::vector<std::vector<double>> ms(cases.size());
  pass(1, 0);  // touch every page once
  for (int rep = 0; rep < 9; ++rep)
    for (size_t i = 0; i < cases.size(); ++i) ms[i].push_back(pass(cases[i].mode, cases[i].dist));
  std::printf("%s shapes, %.2f GB per pass, %lld-row chunks, %d threads\n", three_b ? "3B" : "1B", bytes / 1e9,
              static_cast<long long>(chunk), kThreads);
  for (size_t i = 0; i < cases.size(); ++i) {
    std::vector<double> v = ms[i];
    std::sort(v.begin(), v.end());
    std::printf("%-13s median %5.1f ms %5.1f GB/s (", cases[i].name, v[4], bytes / v[4] / 1e6);
    for (double m : ms[i]) std::printf(" %.1f", m);
    std::printf(")\n");
  }
}
