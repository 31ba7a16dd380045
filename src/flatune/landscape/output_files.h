// Names of the files measure_landscape and measure_sharpness (measure.h) write into their
// output folder. Kept apart from measure.h so that readers of run folders (report/) find the
// files by these names without pulling in the model.
#pragma once

namespace flatune {

inline constexpr char kLandscapeJsonFile[] = "landscape.json";
inline constexpr char kSharpnessJsonFile[] = "sharpness.json";

}  // namespace flatune
