// The logger: spdlog's default logger writing to stderr, the one global the project keeps.
// spdlog (and the fmt it was built with) stays inside log.cpp: the libtorch wheel ships a
// newer fmt under torch/include that would shadow Debian's in any translation unit that
// includes torch, and spdlog does not compile against it.
#pragma once
#include <string>

namespace flatune {

// level: "debug", "info", "warn", "error". Safe to call more than once.
void init_logging(const std::string& level = "info");

void log_debug(const std::string& message);
void log_info(const std::string& message);
void log_warn(const std::string& message);
void log_error(const std::string& message);

}  // namespace flatune
