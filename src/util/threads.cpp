#include "util/threads.h"

#include <algorithm>

#include "util/error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FLORA_PAUSE() _mm_pause()
#else
#define FLORA_PAUSE() std::this_thread::yield()
#endif

namespace flora {

namespace {
// Waiting: spin briefly (decode issues a run() every few tens of microseconds
// and waking a sleeping thread costs more), then yield the core for a while
// (a runnable thread of ours may be waiting for it), then sleep on a futex.
constexpr int kSpinRounds = 2000;
constexpr int kYieldRounds = 2000;

template <typename Done>
void wait_until(Done done) {
  for (int i = 0; i < kSpinRounds; ++i) {
    if (done()) return;
    FLORA_PAUSE();
  }
  for (int i = 0; i < kYieldRounds; ++i) {
    if (done()) return;
    std::this_thread::yield();
  }
}
}  // namespace

int default_thread_count() { return std::max(1u, std::thread::hardware_concurrency()); }

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads) {
  if (n_threads < 1) fail("thread count must be at least 1, got {}", n_threads);
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  generation_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    wait_until([&] { return generation_.load(std::memory_order_acquire) != seen; });
    const uint64_t g = generation_.load(std::memory_order_acquire);
    if (g == seen) {
      generation_.wait(seen, std::memory_order_acquire);
      continue;
    }
    seen = g;
    if (stop_.load()) return;
    run_task(*task_, index);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
  }
}

void ThreadPool::run_task(const std::function<void(int, int)>& task, int index) noexcept {
  // try costs nothing until something throws (table-based unwinding), so the
  // path without exceptions is as before.
  try {
    task(index, n_threads_);
  } catch (...) {
    if (!failed_.exchange(true, std::memory_order_relaxed)) error_ = std::current_exception();
  }
}

void ThreadPool::run(const std::function<void(int, int)>& task) {
  sync_points_.fetch_add(1, std::memory_order_relaxed);
  if (n_threads_ == 1) {
    task(0, 1);
    return;
  }
  task_ = &task;
  pending_.store(n_threads_ - 1, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  run_task(task, 0);
  wait_until([&] { return pending_.load(std::memory_order_acquire) == 0; });
  int left = pending_.load(std::memory_order_acquire);
  while (left != 0) {
    pending_.wait(left, std::memory_order_acquire);
    left = pending_.load(std::memory_order_acquire);
  }
  // The one branch the exception support adds to a run(); the acquire loads of
  // pending_ above make a worker's error_ visible here.
  if (failed_.load(std::memory_order_relaxed)) [[unlikely]] {
    std::exception_ptr e = std::move(error_);
    error_ = nullptr;
    failed_.store(false, std::memory_order_relaxed);
    std::rethrow_exception(e);
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t blocks = (n + grain - 1) / grain;
  run([&](int t, int nt) {
    const int64_t b0 = blocks * t / nt, b1 = blocks * (t + 1) / nt;
    const int64_t begin = b0 * grain, end = std::min(n, b1 * grain);
    if (begin < end) body(begin, end);
  });
}

}  // namespace flora
