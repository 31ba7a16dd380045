// Directions saved beside a figure so it can be redrawn: one safetensors file holding one or two
// directions ("d1/<parameter>", "d2/<parameter>") with the settings that drew them in the
// file's __metadata__ (seed, normalisation, which parameters, 1-D parameters kept or zeroed).
#pragma once
#include <map>
#include <string>

#include "flatune/landscape/landscape.h"

namespace flatune {

struct DirectionSet {
  std::vector<NamedTensors> directions;         // 1 or 2, each in the model's parameter order
  std::map<std::string, std::string> settings;  // the __metadata__ (strings)
};

// The settings random_direction used, as metadata strings (kind=random, seed, normalize
// filter|none, keep_1d, lora_only).
std::map<std::string, std::string> direction_settings(const DirectionOptions& o);

// Writes the directions (any dtype, bitwise) and settings; "directions" = their count is added.
void save_directions(const std::string& path, const DirectionSet& set);

// Reads a file save_directions wrote and orders each direction as `params` are. Errors name
// the file and the tensor: a parameter without a direction, a shape that differs from the
// model's (both shapes given), a tensor the model does not have, a malformed file.
DirectionSet load_directions(const std::string& path, const NamedParams& params);

// The direction reordered to the parameters' order by name (errors as load_directions, naming
// `where`).
NamedTensors align_direction(const NamedParams& params, const NamedTensors& dir, const std::string& where);

}  // namespace flatune
