// The precompiled header every torch-using target shares (see CMakeLists.txt).
#pragma once
#include <torch/torch.h>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
