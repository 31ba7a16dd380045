#include "flatune/train/signals.h"

#include <csignal>

namespace flatune {

namespace {
volatile std::sig_atomic_t g_stop_signal = 0;
struct sigaction g_old_int, g_old_term;
void on_signal(int sig) { g_stop_signal = sig; }
}  // namespace

StopRequest::StopRequest() {
  g_stop_signal = 0;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &g_old_int);
  sigaction(SIGTERM, &sa, &g_old_term);
}

StopRequest::~StopRequest() {
  sigaction(SIGINT, &g_old_int, nullptr);
  sigaction(SIGTERM, &g_old_term, nullptr);
}

bool StopRequest::requested() const { return g_stop_signal != 0; }
int StopRequest::signal() const { return g_stop_signal; }

}  // namespace flatune
