// A torchrun-like launcher for one machine: starts N copies of a command with RANK,
// WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set, and waits. When one rank fails, the
// others are given `grace` to fail on their own (their collectives notice the dead peer) and are
// then terminated, so the launcher never hangs.
#pragma once
#include <chrono>
#include <string>
#include <vector>

namespace flatune {

struct LaunchResult {
  int exit_code = 0;   // 0 when every rank succeeded
  int failed_rank = -1;   // the first failed rank reaped
  std::string message;    // every failed rank and how it ended
};

LaunchResult launch_local(int nproc, const std::vector<std::string>& command, int master_port = 0,
                          std::chrono::milliseconds grace = std::chrono::seconds(30));

// A TCP port on 127.0.0.1 that was free a moment ago.
int free_local_port();

}  // namespace flatune
