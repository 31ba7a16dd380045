// The device the numerics tests run on: FLATUNE_TEST_DEVICE (cpu, cuda, cuda:N; default cpu),
// resolved as --device is. scripts/gpu-check.sh runs the suite with cuda on a GPU machine.
#pragma once
#include <cstdlib>
#include <string>

#include "flatune/core/compat.h"

namespace flatune::testing {

inline torch::Device test_device() {
  const char* env = std::getenv("FLATUNE_TEST_DEVICE");
  return compat::resolve_device(env && *env ? env : "cpu");
}

}  // namespace flatune::testing
