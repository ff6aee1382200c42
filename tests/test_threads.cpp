// The thread pool: every thread runs the task, and an exception thrown on any
// thread reaches the caller of run() once, after the barrier, leaving the pool
// usable.
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

#include "util/error.h"
#include "util/threads.h"

namespace flora {
namespace {

// Runs a task that counts the threads it ran on; every one must have run.
void expect_runs_everywhere(ThreadPool& pool) {
  std::vector<std::atomic<int>> seen(static_cast<size_t>(pool.size()));
  pool.run([&](int t, int nt) {
    EXPECT_EQ(nt, pool.size());
    seen[t].fetch_add(1);
  });
  for (int t = 0; t < pool.size(); ++t) EXPECT_EQ(seen[t].load(), 1) << "thread " << t;
}

TEST(ThreadPool, RunsEveryThreadAndCountsSyncPoints) {
  for (int n : {1, 2, 4}) {
    ThreadPool pool(n);
    const uint64_t before = pool.sync_points();
    for (int i = 0; i < 3; ++i) expect_runs_everywhere(pool);
    EXPECT_EQ(pool.sync_points() - before, 3u);
  }
}

TEST(ThreadPool, ParallelForCoversTheRangeOnce) {
  ThreadPool pool(3);
  std::vector<std::atomic<int>> hits(1001);
  pool.parallel_for(1001, 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
  });
  for (size_t i = 0; i < hits.size(); ++i) ASSERT_EQ(hits[i].load(), 1) << i;
}

// Throwing from thread `thrower` (every thread when -1): the caller gets one
// exception, every thread finished its task first, and the pool runs again.
void expect_error_from(int n_threads, int thrower) {
  ThreadPool pool(n_threads);
  for (int round = 0; round < 3; ++round) {
    std::atomic<int> finished{0};
    int caught = 0;
    std::string what;
    try {
      pool.run([&](int t, int) {
        finished.fetch_add(1);
        if (thrower < 0 || t == thrower) fail("task failed on thread {}", t);
      });
    } catch (const Error& e) {
      ++caught;
      what = e.what();
    }
    EXPECT_EQ(caught, 1);
    EXPECT_EQ(finished.load(), n_threads) << "run() returned before every thread finished";
    if (thrower >= 0) EXPECT_EQ(what, "task failed on thread " + std::to_string(thrower));
    else EXPECT_EQ(what.rfind("task failed on thread ", 0), 0u) << what;
    expect_runs_everywhere(pool);  // usable afterwards, and no stale error is rethrown
  }
}

TEST(ThreadPool, ExceptionFromAWorkerReachesTheCaller) {
  expect_error_from(2, 1);
  expect_error_from(4, 3);
}

TEST(ThreadPool, ExceptionFromThreadZeroWaitsForTheWorkers) { expect_error_from(4, 0); }

TEST(ThreadPool, ExceptionsFromEveryThreadGiveOneError) {
  expect_error_from(1, -1);
  expect_error_from(4, -1);
}

TEST(ThreadPool, NonFloraExceptionsArriveAsThemselves) {
  ThreadPool pool(3);
  EXPECT_THROW(pool.run([](int t, int) {
    if (t == 2) throw std::out_of_range("index");
  }),
               std::out_of_range);
  EXPECT_THROW(pool.parallel_for(100, 1, [](int64_t b, int64_t) {
    if (b == 0) throw std::bad_alloc();
  }),
               std::bad_alloc);
  expect_runs_everywhere(pool);
}

TEST(ThreadPool, RefusesZeroThreads) { EXPECT_THROW(ThreadPool(0), Error); }

}  // namespace
}  // namespace flora
