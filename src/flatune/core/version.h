// flatune's version, from CMake's project(VERSION): one place to change it.
#pragma once
#include <string>

namespace flatune {
std::string flatune_version();
}
