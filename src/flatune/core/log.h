// The logger: spdlog's default logger writing to stderr, the one global the project keeps.
#pragma once
#include <spdlog/spdlog.h>
#include <string>

namespace flatune {

// level: "debug", "info", "warn", "error". Safe to call more than once.
void init_logging(const std::string& level = "info");

}  // namespace flatune
