#include "flatune/report/landscape_figures.h"

#include <filesystem>

#include "flatune/report/plot.h"

namespace flatune {

void write_landscape_figures(const LandscapeResult& r, const std::string& out_dir) {
  const json& settings = r.record.at("settings");
  const std::string data_name = std::filesystem::path(settings.at("data").get<std::string>()).filename().string();
  const std::string title_data =
      "on " + data_name + " (" + std::to_string(settings.at("examples_used").get<int64_t>()) + " examples)";
  if (r.mode == "interpolation") {
    plot_png_and_svg(out_dir, r.file_stem, [&](const std::string& path) {
      plot_lines(path, "loss from base (0) to tuned (1) " + title_data, "interpolation alpha", "loss",
                 {{"base -> tuned", r.line.alphas, r.line.losses}});
    });
  } else if (r.mode == "2d") {
    plot_png_and_svg(out_dir, r.file_stem, [&](const std::string& path) {
      plot_contour(path, "loss " + title_data, r.grid.alphas, r.grid.betas, r.grid.losses);
    });
  } else {
    const json& directions = settings.at("directions");
    const bool filter_normalised = directions.value("normalize", std::string()) == "filter";
    const std::string kind = filter_normalised ? "filter-normalised" : "Gaussian";
    const std::string seed = directions.value("seed", std::string("?"));
    plot_png_and_svg(out_dir, r.file_stem, [&](const std::string& path) {
      plot_lines(path, "loss along a " + kind + " random direction " + title_data, "step along the direction", "loss",
                 {{"seed " + seed, r.line.alphas, r.line.losses}});
    });
  }
}

}  // namespace flatune
