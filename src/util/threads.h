// A persistent thread pool. Every run() is one synchronisation point (a full
// barrier): on a CPU these play the part kernel launches play on a GPU, so the
// pool counts them and `flora bench` reports them per token.
#pragma once
#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <thread>
#include <vector>

namespace flora {

class ThreadPool {
 public:
  // n_threads includes the calling thread; n_threads - 1 workers are started.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls task(thread_index, n_threads) on every thread, the caller being
  // thread 0, and returns when all have finished. If tasks throw, every thread
  // still reaches the barrier (the task lives in the caller's frame, so no
  // thread may still be running it when run() leaves), the first exception is
  // rethrown here, in the caller, and the others are dropped; the pool stays
  // usable for the next run().
  void run(const std::function<void(int, int)>& task);

  // Splits [0, n) into size() contiguous chunks whose bounds are multiples of
  // `grain` (except the last) and calls body(begin, end) for each non-empty one.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body);

  uint64_t sync_points() const { return sync_points_.load(std::memory_order_relaxed); }

 private:
  void worker_loop(int index);
  // Runs task on thread `index`, keeping the first exception thrown by any thread.
  void run_task(const std::function<void(int, int)>& task, int index) noexcept;

  int n_threads_;
  std::vector<std::thread> workers_;
  const std::function<void(int, int)>* task_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> sync_points_{0};
  // The first exception of the current run(): the thread that sets failed_
  // writes error_, before its pending_ decrement publishes it to the caller.
  std::atomic<bool> failed_{false};
  std::exception_ptr error_;
};

// Work handed out in chunks on demand inside one run(): a thread that is
// descheduled (these machines share their cores with kernel threads) holds up
// the barrier by at most one chunk, where a static split would stall on its
// whole share. Threads call next() until it returns false.
class WorkChunks {
 public:
  WorkChunks(int64_t n, int64_t chunk) : n_(n), chunk_(chunk < 1 ? 1 : chunk) {}
  bool next(int64_t& begin, int64_t& end) {
    begin = next_.fetch_add(chunk_, std::memory_order_relaxed);
    if (begin >= n_) return false;
    end = begin + chunk_ < n_ ? begin + chunk_ : n_;
    return true;
  }

 private:
  int64_t n_, chunk_;
  std::atomic<int64_t> next_{0};
};

// Default thread count: the machine's cores (hardware_concurrency).
int default_thread_count();

}  // namespace flora
