// Progress for long work: on a terminal a redrawn bar with rate and ETA; otherwise (logs, CI)
// a plain line at most every `log_every_s` seconds and at the end.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace flatune {

class Progress {
 public:
  Progress(std::string label, int64_t total, std::string unit = "it", double log_every_s = 10.0);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Sets the count done so far and an optional status text (e.g. "loss 2.31").
  void update(int64_t done, const std::string& status = "");
  void finish(const std::string& status = "");
  double elapsed_s() const;

  // "1h02m", "3m05s", "12s"
  static std::string format_duration(double seconds);

 private:
  void draw(bool final);
  std::string label_, unit_, status_;
  int64_t total_, done_ = 0;
  double log_every_s_;
  bool tty_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace flatune
