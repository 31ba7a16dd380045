// Helpers shared by the tests: where ../shared/testdata is, temporary folders, running the CLI.
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace flatune::testing {

// FLATUNE_SHARED, else the shared/ folder beside the repository.
inline std::string shared_dir() {
  const char* env = std::getenv("FLATUNE_SHARED");
  return env ? env : FLATUNE_SHARED_DEFAULT;
}
inline std::string testdata(const std::string& rel) { return shared_dir() + "/testdata/" + rel; }

// Skips the test with a message when the reference data is absent.
#define FLATUNE_REQUIRE_TESTDATA(rel)                                                      \
  do {                                                                                     \
    if (!std::filesystem::exists(::flatune::testing::testdata(rel)))                       \
      GTEST_SKIP() << "reference data " << ::flatune::testing::testdata(rel) << " absent"; \
  } while (0)

// A fresh temporary directory removed at scope exit.
struct TempDir {
  std::string path;
  TempDir() {
    std::string tmpl = std::filesystem::temp_directory_path().string() + "/flatune-test-XXXXXX";
    path = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string operator/(const std::string& rel) const { return path + "/" + rel; }
};

struct CommandResult {
  int exit_code;
  std::string output;  // stdout and stderr together
};

// Runs the flatune binary with `args` (a shell-quoted string), capturing output.
CommandResult run_flatune(const std::string& args);

// An Alpaca file of `n` additions ("add 3 and 5" -> "8"): small training data every test can
// learn something from. Returns `path`.
std::string write_sums_alpaca(const std::string& path, int n);

}  // namespace flatune::testing
