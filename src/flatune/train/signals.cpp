#include "flatune/train/signals.h"

#include <unistd.h>

#include <csignal>
#include <cstring>

namespace flatune {

namespace {
volatile std::sig_atomic_t g_stop_signal = 0;
volatile std::sig_atomic_t g_deferred = 0;  // a StopRequest exists
bool g_installed = false;

// Only async-signal-safe calls: write(2) and _exit(2).
void on_signal(int sig) {
  if (g_deferred && g_stop_signal == 0) {
    g_stop_signal = sig;
    return;
  }
  const char* text = sig == SIGINT ? "flatune: interrupted by SIGINT\n" : "flatune: interrupted by SIGTERM\n";
  ssize_t ignored = ::write(STDERR_FILENO, text, std::strlen(text));
  (void)ignored;
  ::_exit(128 + sig);
}

sigset_t interrupt_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}
}  // namespace

void install_interrupt_handlers() {
  if (!g_installed) {
    struct sigaction sa{};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    g_installed = true;
  }
  sigset_t set = interrupt_set();
  sigprocmask(SIG_UNBLOCK, &set, nullptr);
}

void block_interrupts() {
  sigset_t set = interrupt_set();
  sigprocmask(SIG_BLOCK, &set, nullptr);
}

std::string signal_name(int sig) {
  if (sig == SIGINT) return "SIGINT";
  if (sig == SIGTERM) return "SIGTERM";
  return "signal " + std::to_string(sig);
}

StopRequest::StopRequest() {
  install_interrupt_handlers();
  g_stop_signal = 0;
  g_deferred = 1;
}

StopRequest::~StopRequest() {
  g_deferred = 0;
  g_stop_signal = 0;
}

bool StopRequest::requested() const { return g_stop_signal != 0; }
int StopRequest::signal() const { return g_stop_signal; }
void StopRequest::clear() { g_stop_signal = 0; }

}  // namespace flatune
