// The processes of one run, for data parallelism (`mpirun -np N flora train|eval`):
// flora's only view of MPI. Under mpirun (Open MPI's OMPI_COMM_WORLD_SIZE, or
// PMI_SIZE / PMIX_RANK of other launchers, in the environment) and in a flora
// built with MPI (CMake found it: FLORA_HAVE_MPI), the ranks of MPI_COMM_WORLD;
// otherwise this process alone, rank 0 of 1, and nothing here calls MPI (a
// flora run without mpirun behaves as one built without MPI).
//
// Every call below is collective unless it says otherwise: all ranks make it,
// in the same order. Only the thread that called init() may call them
// (MPI_THREAD_FUNNELED); the thread pools never do.
//
// Sums across ranks are never left to MPI's reductions, whose order of
// operations is the library's: ordered_fold() adds in rank order, so that
// N ranks give the bits of one process (train/trainer.cpp says how).
#pragma once
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

namespace flora::dist {

// Starts MPI when launched by mpirun and built with it; once, first thing in
// main. Fails (flora::Error) when mpirun started this process but flora was
// built without MPI, and N > 1 copies would each train alone.
void init(int* argc, char*** argv);
// Ends MPI (at a normal exit; an error ends the job with abort()). Not collective
// for the caller's code: each rank calls it when done.
void finalize();

int rank();
int size();
bool built_with_mpi();

// Not collective: prints "flora: error (rank R of N): MESSAGE" on stderr and
// ends every rank of the job (MPI_Abort) with exit code `code`. With one
// process: "flora: error: MESSAGE" and exit(code), as flora always did.
[[noreturn]] void abort(const std::string& message, int code);

// The contiguous share [begin, end) of `count` items, in order, that `rank` of
// `ranks` takes: as even as integer division makes it (the first shares are
// the shorter ones), empty where count < ranks. Not collective.
struct Share {
  int64_t begin = 0, end = 0;
};
Share share(int64_t count, int rank, int ranks);
inline Share my_share(int64_t count) { return share(count, rank(), size()); }

// `bytes` at data from `root` to every rank.
void broadcast(void* data, int64_t bytes, int root);
void broadcast(std::string& s, int root);
template <typename T>
void broadcast_value(T& v, int root) {
  static_assert(std::is_trivially_copyable_v<T>);
  broadcast(&v, sizeof(T), root);
}

// Every rank's bytes, in rank order, on every rank.
std::vector<std::string> allgather(const std::string& mine);
// Every rank's values, concatenated in rank order, on every rank.
template <typename T>
std::vector<T> allgather_values(const std::vector<T>& mine) {
  static_assert(std::is_trivially_copyable_v<T>);
  std::string bytes(mine.size() * sizeof(T), '\0');
  if (!mine.empty()) std::memcpy(bytes.data(), mine.data(), bytes.size());
  std::vector<T> all;
  for (const std::string& part : allgather(bytes)) {
    const size_t at = all.size();
    all.resize(at + part.size() / sizeof(T));
    if (!part.empty()) std::memcpy(all.data() + at, part.data(), part.size());
  }
  return all;
}

// A sum in one fixed order over terms that the ranks hold, rank 0's first:
// acc (n floats) enters rank 0 as it holds it (its own terms already added),
// each rank r > 0 receives rank r-1's acc, calls fold(acc, begin, end) to add
// its own terms, in their order, to elements [begin, end), and passes it on;
// the last rank's acc, the whole sum, is then broadcast to every rank's acc.
// The chain goes in segments of kFoldSegment floats, so that rank r+1 adds
// segment s while rank r adds segment s+1 (a pipeline: N-1 hops of one
// segment, then the rest at the link's rate). Elementwise, so the segments
// change no bit. With one process: fold(acc, 0, n), nothing else.
constexpr int64_t kFoldSegment = int64_t{1} << 18;  // 1 MiB of floats
using FoldFn = std::function<void(float* acc, int64_t begin, int64_t end)>;
void ordered_fold(float* acc, int64_t n, const FoldFn& fold);

// Returns when every rank has called it (MPI_Barrier). Its time is counted as
// waiting (CommStats::wait_seconds): called before a sum, it keeps the time the
// ranks spend waiting for the slowest one out of the time the sum takes.
void barrier();

// Not collective: what this rank's calls above have cost since init(): wall
// time inside them (a rank that reaches a call first waits there for the
// others; barrier()'s time is wait_seconds alone) and bytes it sent.
struct CommStats {
  double seconds = 0, wait_seconds = 0;
  int64_t bytes_sent = 0;
};
CommStats comm_stats();

}  // namespace flora::dist
