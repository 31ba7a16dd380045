// The embedded default: the whole study at small scale from WordNet, as a grid. The data and
// the "before" model (pretrained, then instruction-tuned) are cached under
// flatune_cache_root(), keyed by their settings, so later runs start at fine-tuning.
#pragma once
#include <string>

namespace flatune {

// preset: quick (seconds; for tests), default (the README's demo), full (the paper's grid at
// small scale). Writes <out>/grid.yaml and the data paths it uses; returns the grid file.
std::string write_demo_grid(const std::string& preset, const std::string& out, const std::string& wordnet_dir,
                            const std::string& cache_root);

}  // namespace flatune
