#include "flatune/core/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

#include "flatune/core/log.h"

namespace flatune {

Progress::Progress(std::string label, int64_t total, std::string unit, double log_every_s)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      log_every_s_(log_every_s),
      tty_(::isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

Progress::~Progress() {
  if (!finished_ && tty_ && done_ > 0) std::fputc('\n', stderr);
}

double Progress::elapsed_s() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

std::string Progress::format_duration(double s) {
  if (!(s >= 0) || s > 1e8) return "?";
  long t = std::lround(s);
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
  else if (t >= 60) std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%lds", t);
  return buf;
}

void Progress::update(int64_t done, const std::string& status) {
  done_ = done;
  status_ = status;
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_draw_).count();
  // A terminal redraws ~10 times a second; a log gets a line every log_every_s seconds.
  if (since >= (tty_ ? 0.1 : log_every_s_) || (tty_ && done == total_)) {
    last_draw_ = now;
    draw(false);
  }
}

void Progress::finish(const std::string& status) {
  if (finished_) return;
  if (!status.empty()) status_ = status;
  draw(true);
  finished_ = true;
}

void Progress::draw(bool final) {
  double el = elapsed_s();
  double rate = el > 0 ? done_ / el : 0;
  double eta = (rate > 0 && total_ > 0) ? (total_ - done_) / rate : -1;
  char rate_buf[48];
  std::snprintf(rate_buf, sizeof rate_buf, "%.2f %s/s", rate, unit_.c_str());
  std::string tail = std::string(rate_buf) + " elapsed " + format_duration(el) +
                     (final ? "" : " eta " + format_duration(eta)) + (status_.empty() ? "" : "  " + status_);
  if (tty_) {
    const int width = 24;
    int filled = total_ > 0 ? static_cast<int>(width * std::min<double>(1.0, double(done_) / total_)) : 0;
    std::string bar(filled, '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r\033[K%s [%s] %lld/%lld %s", label_.c_str(), bar.c_str(), static_cast<long long>(done_),
                 static_cast<long long>(total_), tail.c_str());
    if (final) std::fputc('\n', stderr);
    std::fflush(stderr);
  } else {
    log_info(label_ + " " + std::to_string(done_) + "/" + std::to_string(total_) + " " + tail);
  }
}

}  // namespace flatune
