#include "flatune/report/plot.h"

#include <plplot/plplot.h>

#include <algorithm>
#include <cmath>
#include <mutex>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"

namespace flatune {

namespace {

// PLplot keeps library-wide state; one figure at a time.
std::mutex& plot_mutex() {
  static std::mutex m;
  return m;
}

// Opens a white-background figure; colour 1 (axes, text) black, 2.. a readable palette.
void begin(const std::string& path) {
  std::string dev;
  if (path.size() > 4 && path.compare(path.size() - 4, 4, ".png") == 0) dev = "pngcairo";
  else if (path.size() > 4 && path.compare(path.size() - 4, 4, ".svg") == 0) dev = "svg";
  else fail(path, "figures are .png or .svg");
  plsdev(dev.c_str());
  plsfnam(path.c_str());
  plspage(0, 0, 800, 560, 0, 0);
  plscol0(0, 255, 255, 255);
  plscol0(1, 0, 0, 0);
  static const int palette[][3] = {{31, 119, 180},  {214, 39, 40}, {44, 160, 44}, {255, 127, 14},
                                   {148, 103, 189}, {140, 86, 75}, {23, 190, 207}};
  for (int i = 0; i < 7; ++i) plscol0(2 + i, palette[i][0], palette[i][1], palette[i][2]);
  plinit();
  plfontld(1);
}

void frame(double x0, double x1, double y0, double y1, const std::string& title, const std::string& xl,
           const std::string& yl) {
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) y1 = y0 + 1;
  double py = (y1 - y0) * 0.05;
  plcol0(1);
  plenv(x0, x1, y0 - py, y1 + py, 0, 0);
  pllab(xl.c_str(), yl.c_str(), title.c_str());
}

void range(const std::vector<double>& v, double* lo, double* hi) {
  for (double x : v)
    if (std::isfinite(x)) {
      *lo = std::min(*lo, x);
      *hi = std::max(*hi, x);
    }
}

}  // namespace

void plot_lines(const std::string& path, const std::string& title, const std::string& xl, const std::string& yl,
                const std::vector<Series>& series) {
  std::lock_guard<std::mutex> lock(plot_mutex());
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const auto& s : series) {
    range(s.x, &x0, &x1);
    range(s.y, &y0, &y1);
  }
  if (!std::isfinite(x0)) fail(path, "nothing to plot");
  begin(path);
  frame(x0, x1, y0, y1, title, xl, yl);
  std::vector<PLINT> opt, colors, styles;
  std::vector<PLFLT> widths;
  std::vector<const char*> texts;
  for (size_t i = 0; i < series.size(); ++i) {
    plcol0(2 + static_cast<int>(i % 7));
    plwidth(2);
    plline(static_cast<PLINT>(series[i].x.size()), series[i].x.data(), series[i].y.data());
    opt.push_back(PL_LEGEND_LINE);
    colors.push_back(2 + static_cast<int>(i % 7));
    styles.push_back(1);
    widths.push_back(2);
    texts.push_back(series[i].label.c_str());
  }
  std::vector<PLINT> text_colors(series.size(), 1);
  PLFLT lw, lh;
  pllegend(&lw, &lh, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX,
           PL_POSITION_TOP | PL_POSITION_RIGHT | PL_POSITION_INSIDE, 0.02, 0.02, 0.1, 0, 1, 1, 0, 0,
           static_cast<PLINT>(series.size()), opt.data(), 1.0, 0.9, 2.0, 1.0, text_colors.data(), texts.data(), nullptr,
           nullptr, nullptr, nullptr, colors.data(), styles.data(), widths.data(), nullptr, nullptr, nullptr, nullptr);
  plend();
}

void plot_scatter(const std::string& path, const std::string& title, const std::string& xl, const std::string& yl,
                  const std::vector<double>& x, const std::vector<double>& y, const std::vector<std::string>& labels) {
  std::lock_guard<std::mutex> lock(plot_mutex());
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  range(x, &x0, &x1);
  range(y, &y0, &y1);
  if (!std::isfinite(x0)) fail(path, "nothing to plot");
  double px = (x1 - x0) * 0.15 + 1e-12;
  begin(path);
  frame(x0 - px, x1 + px, y0, y1, title, xl, yl);
  plcol0(2);
  plssym(0, 1.5);
  plpoin(static_cast<PLINT>(x.size()), x.data(), y.data(), 17);
  plcol0(1);
  plschr(0, 0.6);
  for (size_t i = 0; i < labels.size() && i < x.size(); ++i) plptex(x[i], y[i], 1, 0, -0.1, labels[i].c_str());
  plend();
}

void plot_contour(const std::string& path, const std::string& title, const std::vector<double>& x,
                  const std::vector<double>& y, const std::vector<std::vector<double>>& z) {
  std::lock_guard<std::mutex> lock(plot_mutex());
  const int nx = static_cast<int>(x.size()), ny = static_cast<int>(y.size());
  if (nx < 2 || ny < 2) fail(path, "a contour needs a grid of at least 2 x 2");
  double z0 = INFINITY, z1 = -INFINITY;
  for (const auto& row : z) range(row, &z0, &z1);
  std::vector<PLFLT*> rows;
  std::vector<std::vector<PLFLT>> data(z);
  for (auto& r : data) rows.push_back(r.data());
  PLcGrid grid;
  std::vector<PLFLT> gx(x), gy(y);
  grid.xg = gx.data();
  grid.yg = gy.data();
  grid.nx = nx;
  grid.ny = ny;
  const int levels = 12;
  std::vector<PLFLT> clev(levels);
  for (int i = 0; i < levels; ++i) clev[i] = z0 + (z1 - z0) * (i + 0.5) / levels;
  begin(path);
  frame(x.front(), x.back(), y.front(), y.back(), title, "direction 1", "direction 2");
  // Filled bands from blue (low) to red (high), then the contour lines.
  plscmap1n(256);
  PLFLT pos[] = {0.0, 1.0}, r[] = {0.85, 0.95}, g[] = {0.9, 0.45}, b[] = {1.0, 0.3};
  plscmap1l(1, 2, pos, r, g, b, nullptr);
  std::vector<PLFLT> shades(levels + 1);
  for (int i = 0; i <= levels; ++i) shades[i] = z0 + (z1 - z0) * i / levels;
  plshades(rows.data(), nx, ny, nullptr, x.front(), x.back(), y.front(), y.back(), shades.data(), levels + 1, 1, 0, 0,
           plfill, 1, pltr1, &grid);
  plcol0(1);
  plcont(rows.data(), nx, ny, 1, nx, 1, ny, clev.data(), levels, pltr1, &grid);
  plend();
}

void plot_png_and_svg(const std::string& dir, const std::string& stem,
                      const std::function<void(const std::string& path)>& draw) {
  draw(join_path(dir, stem + ".png"));
  draw(join_path(dir, stem + ".svg"));
}

}  // namespace flatune
