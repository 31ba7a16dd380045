// Figures of a surface measure_landscape (landscape/measure.h) measured, drawn here because
// plotting belongs to the report layer.
#pragma once
#include <string>

#include "flatune/landscape/measure.h"

namespace flatune {

// <stem>.png and <stem>.svg in `out_dir`, beside the surface's CSV: the 1-D curve, the 2-D
// contours or the base -> tuned curve. Titles come from the result's record alone, as they
// would from its landscape.json.
void write_landscape_figures(const LandscapeResult& result, const std::string& out_dir);

}  // namespace flatune
