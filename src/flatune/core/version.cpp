#include "flatune/core/version.h"

namespace flatune {
// FLATUNE_VERSION is defined for this file alone, so a version bump recompiles one file.
std::string flatune_version() { return FLATUNE_VERSION; }
}  // namespace flatune
