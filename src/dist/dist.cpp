#include "dist/dist.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "util/error.h"
#include "util/timer.h"

#ifdef FLORA_HAVE_MPI
#include <mpi.h>
#endif

namespace flora::dist {

namespace {

int g_rank = 0, g_size = 1;
bool g_mpi = false;  // MPI_Init ran (and MPI_Finalize has not)
CommStats g_stats;

// The size the launcher gave this process, or 0 when no launcher started it.
int launcher_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"})
    if (const char* v = std::getenv(name); v && *v) return std::max(1, std::atoi(v));
  return 0;
}

#ifdef FLORA_HAVE_MPI
// MPI counts are int: large buffers go in pieces of at most 1 GiB.
constexpr int64_t kMaxMessage = int64_t{1} << 30;

// Times one MPI call into g_stats.
template <typename F>
void timed(F&& call) {
  const double t0 = now_seconds();
  call();
  g_stats.seconds += now_seconds() - t0;
}
#endif

}  // namespace

void init(int* argc, char*** argv) {
  const int launched = launcher_size();
#ifdef FLORA_HAVE_MPI
  if (launched == 0) return;
  int provided = 0;
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  g_mpi = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
#else
  (void)argc, (void)argv;
  if (launched > 1)
    fail(
        "started by mpirun as one of {} processes, but this flora was built without MPI (CMake found no "
        "libopenmpi-dev): each would train alone; run it without mpirun, or install MPI (scripts/setup.sh) and rebuild",
        launched);
#endif
}

void finalize() {
#ifdef FLORA_HAVE_MPI
  if (g_mpi) MPI_Finalize();
#endif
  g_mpi = false;
}

int rank() { return g_rank; }
int size() { return g_size; }

bool built_with_mpi() {
#ifdef FLORA_HAVE_MPI
  return true;
#else
  return false;
#endif
}

void abort(const std::string& message, int code) {
  std::fflush(stdout);
  if (g_size > 1)
    std::fprintf(stderr, "flora: error (rank %d of %d): %s\n", g_rank, g_size, message.c_str());
  else
    std::fprintf(stderr, "flora: error: %s\n", message.c_str());
  std::fflush(stderr);
#ifdef FLORA_HAVE_MPI
  if (g_mpi && g_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
  finalize();
#endif
  std::exit(code);
}

Share share(int64_t count, int r, int ranks) {
  FLORA_ASSERT(count >= 0 && ranks >= 1 && r >= 0 && r < ranks);
  return Share{count * r / ranks, count * (r + 1) / ranks};
}

void broadcast(void* data, int64_t bytes, int root) {
  if (g_size == 1) return;
#ifdef FLORA_HAVE_MPI
  auto* p = static_cast<char*>(data);
  for (int64_t at = 0; at < bytes; at += kMaxMessage) {
    const int n = static_cast<int>(std::min(kMaxMessage, bytes - at));
    timed([&] { MPI_Bcast(p + at, n, MPI_BYTE, root, MPI_COMM_WORLD); });
  }
  if (g_rank == root) g_stats.bytes_sent += bytes;
#endif
}

void broadcast(std::string& s, int root) {
  int64_t n = static_cast<int64_t>(s.size());
  broadcast_value(n, root);
  s.resize(static_cast<size_t>(n));
  broadcast(s.data(), n, root);
}

std::vector<std::string> allgather(const std::string& mine) {
  if (g_size == 1) return {mine};
  std::vector<std::string> all(static_cast<size_t>(g_size));
#ifdef FLORA_HAVE_MPI
  int64_t n = static_cast<int64_t>(mine.size());
  std::vector<int64_t> sizes(static_cast<size_t>(g_size));
  timed([&] { MPI_Allgather(&n, 1, MPI_INT64_T, sizes.data(), 1, MPI_INT64_T, MPI_COMM_WORLD); });
  std::vector<int> counts(static_cast<size_t>(g_size)), displs(static_cast<size_t>(g_size));
  int64_t total = 0;
  for (int r = 0; r < g_size; ++r) {
    counts[r] = static_cast<int>(sizes[r]);
    displs[r] = static_cast<int>(total);
    total += sizes[r];
  }
  if (total > std::numeric_limits<int>::max())
    fail("gathering {} bytes across {} ranks: expected at most 2 GiB in one gather", total, g_size);
  std::string flat(static_cast<size_t>(total), '\0');
  timed([&] {
    MPI_Allgatherv(mine.data(), static_cast<int>(n), MPI_BYTE, flat.data(), counts.data(), displs.data(), MPI_BYTE,
                   MPI_COMM_WORLD);
  });
  g_stats.bytes_sent += n;
  for (int r = 0; r < g_size; ++r) all[r] = flat.substr(static_cast<size_t>(displs[r]), static_cast<size_t>(sizes[r]));
#endif
  return all;
}

void ordered_fold(float* acc, int64_t n, const FoldFn& fold) {
  if (g_size == 1) {
    fold(acc, 0, n);
    return;
  }
#ifdef FLORA_HAVE_MPI
  constexpr int kTag = 14;
  for (int64_t b = 0; b < n; b += kFoldSegment) {
    const int64_t e = std::min(n, b + kFoldSegment);
    const int count = static_cast<int>(e - b);
    if (g_rank > 0)
      timed([&] { MPI_Recv(acc + b, count, MPI_FLOAT, g_rank - 1, kTag, MPI_COMM_WORLD, MPI_STATUS_IGNORE); });
    fold(acc, b, e);
    if (g_rank + 1 < g_size) {
      timed([&] { MPI_Send(acc + b, count, MPI_FLOAT, g_rank + 1, kTag, MPI_COMM_WORLD); });
      g_stats.bytes_sent += (e - b) * static_cast<int64_t>(sizeof(float));
    }
  }
  broadcast(acc, n * static_cast<int64_t>(sizeof(float)), g_size - 1);
#endif
}

void barrier() {
  if (g_size == 1) return;
#ifdef FLORA_HAVE_MPI
  const double t0 = now_seconds();
  MPI_Barrier(MPI_COMM_WORLD);
  g_stats.wait_seconds += now_seconds() - t0;
#endif
}

CommStats comm_stats() { return g_stats; }

}  // namespace flora::dist
