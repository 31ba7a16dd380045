#include "test_util.h"

#include <sys/wait.h>

#include <array>
#include <cstdio>

#include "flatune/core/fs.h"
#include "flatune/core/json.h"

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

std::string write_sums_alpaca(const std::string& path, int n) {
  json rows = json::array();
  for (int i = 0; i < n; ++i) {
    int a = (i * 7) % 23, b = (i * 5) % 19;
    rows.push_back({{"instruction", "add " + std::to_string(a) + " and " + std::to_string(b)},
                    {"input", ""},
                    {"output", std::to_string(a + b)}});
  }
  write_file_atomic(path, rows.dump());
  return path;
}

}  // namespace flatune::testing
