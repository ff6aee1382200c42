// A progress line on stderr for long work (training, evaluation): redrawn in
// place on a terminal, and printed as plain lines at most every few seconds
// otherwise, so that logs of CI runs stay short.
#pragma once
#include <cstdint>
#include <string>

namespace flora {

class Progress {
 public:
  // label: what is counted ("step", "example"); total: 0 when unknown.
  Progress(std::string label, int64_t total);
  // Shows done/total, a bar, `detail` and the ETA from the mean rate so far.
  void update(int64_t done, const std::string& detail);
  // The final line (always printed), ending the in-place redraw.
  void finish(const std::string& detail);

 private:
  std::string line(int64_t done, const std::string& detail) const;
  std::string label_;
  int64_t total_;
  bool tty_;
  double start_, last_print_ = -1e9;
  int64_t last_done_ = 0;
};

// "42s", "3m05s", "1h02m"
std::string format_duration(double seconds);

}  // namespace flora
