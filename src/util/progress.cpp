#include "util/progress.h"

#include <unistd.h>

#include <cstdio>

#include "util/error.h"
#include "util/timer.h"

namespace flora {

namespace {
// Without a terminal, a line at most this often (seconds).
constexpr double kLogInterval = 5.0;
constexpr int kBarWidth = 24;
}  // namespace

std::string format_duration(double s) {
  if (!(s >= 0) || s > 1e7) return "?";
  const int64_t t = static_cast<int64_t>(s + 0.5);
  if (t < 60) return fmt::format("{}s", t);
  if (t < 3600) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{}h{:02}m", t / 3600, (t % 3600) / 60);
}

Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)), total_(total), tty_(::isatty(2)), start_(now_seconds()) {}

std::string Progress::line(int64_t done, const std::string& detail) const {
  const double elapsed = now_seconds() - start_;
  std::string out = fmt::format("{} {}", label_, done);
  if (total_ > 0) {
    const double frac = std::min(1.0, static_cast<double>(done) / static_cast<double>(total_));
    const int filled = static_cast<int>(frac * kBarWidth);
    out += fmt::format("/{} [{}{}] {:3.0f}%", total_, std::string(filled, '='), std::string(kBarWidth - filled, ' '),
                       100 * frac);
    if (done > 0 && done < total_)
      out += " ETA " + format_duration(elapsed * static_cast<double>(total_ - done) / static_cast<double>(done));
  }
  if (!detail.empty()) out += "  " + detail;
  out += "  " + format_duration(elapsed);
  return out;
}

void Progress::update(int64_t done, const std::string& detail) {
  const double now = now_seconds();
  last_done_ = done;
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s", line(done, detail).c_str());
  } else if (now - last_print_ >= kLogInterval) {
    std::fprintf(stderr, "%s\n", line(done, detail).c_str());
    last_print_ = now;
  } else {
    return;
  }
  std::fflush(stderr);
}

void Progress::finish(const std::string& detail) {
  std::fprintf(stderr, tty_ ? "\r\033[K%s\n" : "%s\n", line(last_done_, detail).c_str());
  std::fflush(stderr);
}

}  // namespace flora
