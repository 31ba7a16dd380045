// A torchrun-like launcher for one machine: starts N copies of a command with RANK,
// WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set, and waits. When one rank fails, the
// others are given `grace` to fail on their own (their collectives notice the dead peer) and are
// then terminated, so the launcher never hangs. The ranks run in a process group of their own:
// a SIGINT or SIGTERM to the launcher (Ctrl-C included) is passed to each rank once, as if each
// had been sent it, and the launcher reports the run as interrupted.
#pragma once
#include <chrono>
#include <string>
#include <vector>

namespace flatune {

struct LaunchResult {
  int exit_code = 0;       // 0 when every rank succeeded
  int interrupted_by = 0;  // the signal passed on to the ranks, if any
  int failed_rank = -1;    // the first failed rank reaped
  std::string message;     // every failed rank and how it ended
};

// collective_timeout_s > 0 is passed to the ranks as FLATUNE_COLLECTIVE_TIMEOUT.
LaunchResult launch_local(int nproc, const std::vector<std::string>& command, int master_port = 0,
                          std::chrono::milliseconds grace = std::chrono::seconds(30), double collective_timeout_s = 0);

// A TCP port on 127.0.0.1 that was free a moment ago.
int free_local_port();

}  // namespace flatune
