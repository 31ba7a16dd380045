// SIGINT and SIGTERM. Outside training they end the program at once (exit 128 + signal, as
// shells report a process a signal ended) with a one-line message; while a StopRequest exists
// the first one only sets a flag, so the training loop can finish its step, save a checkpoint
// and stop, and a second one ends the program at once. The handler's flag is the one piece of
// process-wide state besides the logger, as a signal handler needs.
#pragma once
#include <stdexcept>
#include <string>

namespace flatune {

// Installs the handlers (idempotent) and unblocks the two signals, which main blocks across its
// re-execution so that one sent while the program starts is delivered here, not lost.
void install_interrupt_handlers();

// Blocks SIGINT and SIGTERM; they stay pending (even when the parent ignored them) until
// install_interrupt_handlers().
void block_interrupts();

// "SIGINT", "SIGTERM", or "signal N".
std::string signal_name(int sig);

// While it exists, a signal asks the holder to stop at the next safe point.
class StopRequest {
 public:
  StopRequest();
  ~StopRequest();
  StopRequest(const StopRequest&) = delete;
  StopRequest& operator=(const StopRequest&) = delete;
  bool requested() const;
  int signal() const;
  // Forgets the signal, so that the next one is caught too (the launcher passes each on).
  void clear();
};

// Thrown when work stopped early on a signal; the CLI prints what() and exits 128 + signal.
struct Interrupted : std::runtime_error {
  int signal;
  Interrupted(int sig, const std::string& message) : std::runtime_error(message), signal(sig) {}
};

}  // namespace flatune
