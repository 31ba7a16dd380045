#include "flatune/core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

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

void log_debug(const std::string& message) { spdlog::debug(message); }
void log_info(const std::string& message) { spdlog::info(message); }
void log_warn(const std::string& message) { spdlog::warn(message); }
void log_error(const std::string& message) { spdlog::error(message); }

}  // namespace flatune
