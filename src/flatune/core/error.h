// One error type for everything a user can get wrong: it names the file (or flag, or item) and
// the problem, and the CLI prints it as one line `flatune: <where>: <problem>` with exit code 2.
#pragma once
#include <stdexcept>
#include <string>

namespace flatune {

class Error : public std::runtime_error {
 public:
  Error(std::string where, std::string problem)
      : std::runtime_error(where.empty() ? problem : where + ": " + problem),
        where_(std::move(where)),
        problem_(std::move(problem)) {}
  const std::string& where() const { return where_; }
  const std::string& problem() const { return problem_; }

 private:
  std::string where_;
  std::string problem_;
};

[[noreturn]] inline void fail(const std::string& where, const std::string& problem) { throw Error(where, problem); }

// Checks a condition that depends on user input; the message is built only on failure.
#define FLATUNE_CHECK(cond, where, problem)           \
  do {                                                \
    if (!(cond)) ::flatune::fail((where), (problem)); \
  } while (0)

}  // namespace flatune
