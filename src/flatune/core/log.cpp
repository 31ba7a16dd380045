#include "flatune/core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

namespace flatune {

void init_logging(const std::string& level) {
  auto logger = spdlog::get("flatune");
  if (!logger) {
    logger = spdlog::stderr_color_mt("flatune");
    logger->set_pattern("[%H:%M:%S] %^%l%$ %v");
    spdlog::set_default_logger(logger);
  }
  spdlog::set_level(spdlog::level::from_str(level));
}

}  // namespace flatune
