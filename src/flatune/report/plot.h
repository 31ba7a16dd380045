// Figures with PLplot, drawn like a paper's: white background, black axes, labelled, with a
// legend. The format follows the file name: .png (cairo) or .svg.
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace flatune {

struct Series {
  std::string label;
  std::vector<double> x, y;
};

void plot_lines(const std::string& path, const std::string& title, const std::string& xlabel, const std::string& ylabel,
                const std::vector<Series>& series);
// Points with a text label each (runs in a scatter of sharpness against forgetting).
void plot_scatter(const std::string& path, const std::string& title, const std::string& xlabel,
                  const std::string& ylabel, const std::vector<double>& x, const std::vector<double>& y,
                  const std::vector<std::string>& labels);
// Contour lines of z[i][j] over (x[i], y[j]).
void plot_contour(const std::string& path, const std::string& title, const std::vector<double>& x,
                  const std::vector<double>& y, const std::vector<std::vector<double>>& z);

// <dir>/<stem>.png and <dir>/<stem>.svg, each drawn by `draw(path)`: the PNG to look at, the
// SVG to scale into a paper.
void plot_png_and_svg(const std::string& dir, const std::string& stem,
                      const std::function<void(const std::string& path)>& draw);

}  // namespace flatune
