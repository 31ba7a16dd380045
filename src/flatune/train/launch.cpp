#include "flatune/train/launch.h"

#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <thread>

#include "flatune/core/error.h"
#include "flatune/train/signals.h"

extern char** environ;

namespace flatune {

int free_local_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) fail("launch", "cannot open a socket to find a free port");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
    port = ntohs(addr.sin_port);
  ::close(fd);
  if (port == 0) fail("launch", "cannot find a free port on 127.0.0.1");
  return port;
}

namespace {
std::string describe(int status) {
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("was killed by signal ") + strsignal(WTERMSIG(status));
  return "stopped";
}
}  // namespace

LaunchResult launch_local(int nproc, const std::vector<std::string>& command, int master_port,
                          std::chrono::milliseconds grace, double collective_timeout_s) {
  if (nproc < 1) fail("--nproc", "must be at least 1");
  if (command.empty()) fail("launch", "no command given (flatune launch --nproc N -- COMMAND ...)");
  if (master_port == 0) master_port = free_local_port();

  // Several ranks share the machine's cores: threads spinning between regions would take the
  // cores the other ranks compute on, so a policy flatune chose (not the user) becomes PASSIVE.
  const bool own_policy = std::getenv("FLATUNE_CHOSE_OMP_WAIT_POLICY") != nullptr;
  StopRequest stop;
  std::vector<pid_t> pids(nproc, -1);
  pid_t group = 0;  // the ranks' process group: the first rank's pid
  for (int r = 0; r < nproc; ++r) {
    std::vector<std::string> env_strings;
    for (char** e = environ; *e; ++e) {
      std::string s = *e;
      for (const char* k : {"RANK=", "WORLD_SIZE=", "LOCAL_RANK=", "MASTER_ADDR=", "MASTER_PORT=", "LOCAL_WORLD_SIZE=",
                            "FLATUNE_COLLECTIVE_TIMEOUT="})
        if (s.rfind(k, 0) == 0) s.clear();
      if (own_policy && nproc > 1 && s.rfind("OMP_WAIT_POLICY=", 0) == 0) s = "OMP_WAIT_POLICY=PASSIVE";
      if (!s.empty()) env_strings.push_back(s);
    }
    env_strings.push_back("RANK=" + std::to_string(r));
    env_strings.push_back("LOCAL_RANK=" + std::to_string(r));
    env_strings.push_back("WORLD_SIZE=" + std::to_string(nproc));
    env_strings.push_back("LOCAL_WORLD_SIZE=" + std::to_string(nproc));
    env_strings.emplace_back("MASTER_ADDR=127.0.0.1");
    env_strings.push_back("MASTER_PORT=" + std::to_string(master_port));
    if (collective_timeout_s > 0) {
      char v[64];
      std::snprintf(v, sizeof v, "%g", collective_timeout_s);
      env_strings.push_back(std::string("FLATUNE_COLLECTIVE_TIMEOUT=") + v);
    } else if (const char* v = std::getenv("FLATUNE_COLLECTIVE_TIMEOUT")) {
      env_strings.push_back(std::string("FLATUNE_COLLECTIVE_TIMEOUT=") + v);
    }
    std::vector<char*> envp, argv;
    for (auto& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::vector<std::string> args = command;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    // The ranks inherit the launcher's blocked signals and its default dispositions; they get
    // a group of their own so that a terminal's Ctrl-C reaches them once, through the launcher.
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setpgroup(&attr, group);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGINT);
    sigaddset(&defaults, SIGTERM);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], nullptr, &attr, argv.data(), envp.data());
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
      for (int k = 0; k < r; ++k) ::kill(pids[k], SIGTERM);
      for (int k = 0; k < r; ++k) ::waitpid(pids[k], nullptr, 0);
      fail(command[0], std::string("cannot start: ") + std::strerror(rc));
    }
    pids[r] = pid;
    if (group == 0) group = pid;
  }

  LaunchResult result;
  int running = nproc;
  auto deadline = std::chrono::steady_clock::time_point::max();
  while (running > 0) {
    if (stop.requested()) {
      // Each signal to the launcher goes to every rank once: the first asks them to save and
      // stop, a second one ends them at once.
      result.interrupted_by = stop.signal();
      for (int r = 0; r < nproc; ++r)
        if (pids[r] > 0) ::kill(pids[r], stop.signal());
      stop.clear();
    }
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      int rank = -1;
      for (int r = 0; r < nproc; ++r)
        if (pids[r] == pid) rank = r;
      if (rank < 0) continue;
      pids[rank] = -1;
      --running;
      bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      // A rank that stopped because the launcher passed it a signal did what it was asked.
      const int sig = result.interrupted_by;
      bool interrupted = sig != 0 && ((WIFEXITED(status) && WEXITSTATUS(status) == 128 + sig) ||
                                      (WIFSIGNALED(status) && WTERMSIG(status) == sig));
      if (!ok && !interrupted) {
        // Every failure is named: the rank that died first and the ones that then noticed it
        // may be reaped in either order.
        result.message +=
            (result.message.empty() ? "" : "; ") + ("rank " + std::to_string(rank) + " " + describe(status));
        if (result.failed_rank < 0) {
          result.failed_rank = rank;
          result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
          deadline = std::chrono::steady_clock::now() + grace;
        }
      }
      continue;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      // The survivors had their grace period to notice the dead peer; stop them.
      for (int r = 0; r < nproc; ++r)
        if (pids[r] > 0) ::kill(pids[r], SIGKILL);
      deadline = std::chrono::steady_clock::time_point::max();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return result;
}

}  // namespace flatune
