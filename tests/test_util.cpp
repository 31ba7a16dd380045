#include "test_util.h"

#include <sys/wait.h>

#include <array>
#include <cstdio>

namespace flatune::testing {

CommandResult run_flatune(const std::string& args) {
  std::string cmd = std::string("'") + FLATUNE_BINARY + "' " + args + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  CommandResult r{-1, ""};
  if (!pipe) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

}  // namespace flatune::testing
