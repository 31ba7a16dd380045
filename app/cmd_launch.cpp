// `flatune launch --nproc N -- COMMAND ...`: N local ranks of a command (torchrun-style env).
#include <cstdio>

#include "commands.h"
#include "flatune/core/error.h"
#include "flatune/train/distributed.h"
#include "flatune/train/launch.h"
#include "flatune/train/signals.h"

namespace flatune::cli {

void add_launch_command(CLI::App& app) {
  struct Args {
    int nproc = 2;
    int port = 0;
    double grace_s = 30;
    double collective_timeout_s = 0;
    std::vector<std::string> command;
  };
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("launch", "run N local data-parallel ranks of a flatune command");
  sub->add_option("--nproc", args->nproc, "number of processes")->check(CLI::PositiveNumber);
  sub->add_option("--master-port", args->port, "rendezvous port on 127.0.0.1 (default: a free one)");
  sub->add_option("--grace", args->grace_s, "seconds the other ranks get to stop after one fails");
  char timeout_help[200];
  std::snprintf(timeout_help, sizeof timeout_help,
                "seconds a rank waits in a collective for the others before failing and naming the ranks that never "
                "came (default %g, or FLATUNE_COLLECTIVE_TIMEOUT); passed to the ranks as FLATUNE_COLLECTIVE_TIMEOUT",
                kDefaultCollectiveTimeoutSeconds);
  sub->add_option("--collective-timeout", args->collective_timeout_s, timeout_help)->check(CLI::PositiveNumber);
  sub->add_option("command", args->command, "the command after --")->required();
  sub->callback([args] {
    auto r =
        launch_local(args->nproc, args->command, args->port,
                     std::chrono::milliseconds(static_cast<int64_t>(args->grace_s * 1000)), args->collective_timeout_s);
    if (r.interrupted_by != 0) {
      std::string how = r.exit_code != 0 ? "; " + r.message : "";
      throw Interrupted(r.interrupted_by,
                        "launch: interrupted by " + signal_name(r.interrupted_by) + "; passed it to every rank" + how);
    }
    if (r.exit_code != 0) fail("launch", r.message);
  });
}

}  // namespace flatune::cli
