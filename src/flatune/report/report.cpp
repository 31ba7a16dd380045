// The study's report: report.md and a self-contained report.html from the run folders.
#include <sys/utsname.h>

#include <cmath>
#include <filesystem>
#include <sstream>
#include <thread>

#include "flatune/core/compat.h"
#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/core/log.h"
#include "flatune/eval/forgetting.h"
#include "flatune/report/experiment.h"
#include "flatune/report/experiment_layout.h"
#include "flatune/report/plot.h"
#include "flatune/report/stats.h"
#include "flatune/report/suite_health.h"
#include "flatune/report/watch_report.h"
#include "flatune/report/wiseft_sweep.h"

namespace fs = std::filesystem;

namespace flatune {

namespace {

struct RunInfo {
  std::string name, target, method, dir;
  uint64_t seed = 0;
  double overall = 0, delta = 0, target_score = NAN, target_gain = NAN, sam_sharpness = NAN, lambda_max = NAN,
         seconds = 0;
  json flat;
};

std::string f4(double x) {
  char b[32];
  std::snprintf(b, sizeof b, std::isfinite(x) ? "%.4f" : "n/a", x);
  return b;
}
std::string fixed1(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", x);
  return b;
}
std::string pm(const std::vector<double>& v) {
  char b[64];
  std::snprintf(b, sizeof b, "%.4f ± %.4f", mean_of(v), sample_std(v));
  return b;
}
std::vector<double> get(const std::vector<RunInfo>& runs, double RunInfo::* field) {
  std::vector<double> out;
  for (const auto& r : runs) out.push_back(r.*field);
  return out;
}
std::string base64(const std::string& in) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out += t[v >> 18];
    out += t[(v >> 12) & 63];
    out += t[(v >> 6) & 63];
    out += t[v & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    out += std::string{t[v >> 18], t[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == in.size()) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += std::string{t[v >> 18], t[(v >> 12) & 63], t[(v >> 6) & 63], '='};
  }
  return out;
}
std::string html_escape(const std::string& s) {
  std::string o;
  for (char c : s) o += c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '&' ? "&amp;" : std::string(1, c);
  return o;
}

// Markdown (headings, tables, images, paragraphs) to HTML with images embedded.
std::string to_html(const std::string& md, const std::string& dir) {
  std::ostringstream out;
  out << "<!doctype html><html><head><meta charset=\"utf-8\"><title>flatune report</title><style>"
         "body{font-family:sans-serif;max-width:1000px;margin:2em "
         "auto;line-height:1.4}table{border-collapse:collapse;margin:1em 0}"
         "td,th{border:1px solid #ccc;padding:3px "
         "8px;text-align:right}td:first-child{text-align:left}img{max-width:100%}</style></head><body>\n";
  std::istringstream in(md);
  std::string line;
  bool in_table = false, header = false;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] == '|') {
      if (line.find("---") != std::string::npos) continue;
      if (!in_table) {
        out << "<table>\n";
        in_table = header = true;
      }
      out << "<tr>";
      std::stringstream cells(line.substr(1));
      std::string cell;
      while (std::getline(cells, cell, '|'))
        out << (header ? "<th>" : "<td>") << html_escape(cell) << (header ? "</th>" : "</td>");
      out << "</tr>\n";
      header = false;
      continue;
    }
    if (in_table) {
      out << "</table>\n";
      in_table = false;
    }
    if (line.rfind("## ", 0) == 0) out << "<h2>" << html_escape(line.substr(3)) << "</h2>\n";
    else if (line.rfind("# ", 0) == 0) out << "<h1>" << html_escape(line.substr(2)) << "</h1>\n";
    else if (line.rfind("![", 0) == 0) {
      std::string path = line.substr(line.find('(') + 1);
      path = path.substr(0, path.find(')'));
      std::string full = join_path(dir, path);
      if (file_exists(full)) out << "<p><img src=\"data:image/png;base64," << base64(read_file(full)) << "\"></p>\n";
    } else if (!line.empty()) out << "<p>" << html_escape(line) << "</p>\n";
  }
  if (in_table) out << "</table>\n";
  out << "</body></html>\n";
  return out.str();
}

}  // namespace

void write_report(const Grid& g, const std::string& out) {
  const std::string base_dir = experiment_layout::base_dir(out);
  std::vector<RunInfo> runs;
  for (const auto& t : g.targets)
    for (const auto& m : g.methods)
      for (uint64_t seed : g.seeds) {
        RunInfo r;
        r.target = t.name;
        r.method = m.name;
        r.seed = seed;
        r.name = experiment_layout::run_name(t.name, m.name, seed);
        r.dir = experiment_layout::run_dir(out, r.name);
        const std::string done = experiment_layout::done_marker(r.dir);
        if (!file_exists(done)) continue;
        r.seconds = read_json_file(done).value("seconds", 0.0);
        r.flat = read_json_file(experiment_layout::flatness_file(r.dir));
        r.sam_sharpness = r.flat.value("sam_sharpness", NAN);
        r.lambda_max = r.flat.value("lambda_max", NAN);
        runs.push_back(r);
      }
  if (runs.empty()) fail(out, "no finished runs to report on");
  Categories cats = g.categories.empty() ? paper_categories() : load_categories(g.categories);
  std::vector<std::string> dirs, targets;
  for (const auto& r : runs) dirs.push_back(r.dir);
  for (const auto& t : g.targets)
    if (!t.test.empty()) targets.push_back(fs::path(t.test).stem().string());
  ForgettingTable table = forgetting_table(base_dir, dirs, cats, targets);
  for (size_t k = 0; k < runs.size(); ++k) {
    runs[k].overall = table.overall.tuned[k];
    runs[k].delta = table.overall.tuned[k] - table.overall.base;
    for (const auto& row : table.targets)
      if (!g.targets.empty() && row.name == fs::path([&] {
                                              for (const auto& t : g.targets)
                                                if (t.name == runs[k].target) return t.test;
                                              return std::string();
                                            }())
                                                .stem()
                                                .string()) {
        runs[k].target_score = row.tuned[k];
        runs[k].target_gain = row.tuned[k] - row.base;
      }
  }
  write_file_atomic(join_path(out, "forgetting.md"), forgetting_markdown(table));
  write_file_atomic(join_path(out, "forgetting.csv"), forgetting_csv(table));
  write_file_atomic(experiment_layout::forgetting_file(out), forgetting_json(table).dump(2) + "\n");

  make_dirs(join_path(out, "figures"));
  std::ostringstream md;
  md << "# " << g.name << ": forgetting and flatness\n\n";
  struct utsname u{};
  uname(&u);
  md << "## Setup\n\n";
  md << "Before model: fine-tuning starts from "
     << (g.stages.empty() ? g.before : "the model built by the stages below") << ". ";
  md << "Targets: ";
  for (const auto& t : g.targets) md << t.name << " (" << t.data << ") ";
  md << ". Seeds: " << g.seeds.size() << " (";
  for (size_t i = 0; i < g.seeds.size(); ++i) md << (i ? ", " : "") << g.seeds[i];
  md << "). Machine: " << u.machine << ", " << std::thread::hardware_concurrency() << " cores, " << u.sysname << " "
     << u.release << "; libtorch " << compat::torch_version() << ". Comparisons: ";
  for (size_t i = 0; i < g.comparisons.size(); ++i)
    md << (i ? "; " : "") << g.comparisons[i].method << " against " << g.comparisons[i].against << " ("
       << g.comparisons[i].design << ")";
  md << ".\n\n";
  md << "| setting | value |\n|---|---|\n";
  for (const auto& [k, v] : g.train) md << "| " << k << " | " << v << " |\n";
  for (const auto& st : g.stages)
    for (const auto& [k, v] : st.train) md << "| stage " << st.name << ": " << k << " | " << v << " |\n";
  for (const auto& m : g.methods) {
    md << "| method " << m.name << " | ";
    for (const auto& [k, v] : m.train) md << k << "=" << v << " ";
    if (m.wiseft_alpha >= 0) md << "wiseft-alpha=" << m.wiseft_alpha;
    if (m.rho_reference_norm > 0) {
      md << "rho-reference-norm=" << m.rho_reference_norm;
      const std::string norm_file = experiment_layout::weight_norm_file(out);
      if (file_exists(norm_file)) {
        const double norm = json::parse(read_file(norm_file)).at("norm").get<double>();
        const double rho = std::stod(m.train.at("rho"));
        md << " (rho used: " << f4(method_rho(m, rho, norm)) << " = " << m.train.at("rho") << " × ||before|| "
           << fixed1(norm) << " / " << m.rho_reference_norm << ")";
      }
    }
    md << " |\n";
  }
  md << "\n## Forgetting per run (tuned − before; general suites by category, target tests as gains)\n\n"
     << forgetting_markdown(table);
  if (!g.suites.empty()) {
    std::vector<std::pair<std::string, std::string>> named;
    for (const auto& r : runs) named.emplace_back(r.name, r.dir);
    md << "\n## The suites: can they show forgetting?\n\n"
       << suite_health_markdown(suite_health(g.suites, base_dir, named));
  }

  // Per method over seeds.
  md << "\n## Per method (mean ± sample std over " << g.seeds.size() << " seeds)\n\n";
  md << "| target | method | n | overall general score | Δ overall | target score | target gain | SAM sharpness | λmax "
        "| minutes/run |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  std::map<std::pair<std::string, std::string>, std::vector<RunInfo>> by;
  for (const auto& r : runs) by[{r.target, r.method}].push_back(r);
  for (const auto& t : g.targets)
    for (const auto& m : g.methods) {
      auto it = by.find({t.name, m.name});
      if (it == by.end()) continue;
      const auto& rs = it->second;
      md << "| " << t.name << " | " << m.name << " | " << rs.size() << " | " << pm(get(rs, &RunInfo::overall)) << " | "
         << pm(get(rs, &RunInfo::delta)) << " | " << pm(get(rs, &RunInfo::target_score)) << " | "
         << pm(get(rs, &RunInfo::target_gain)) << " | " << pm(get(rs, &RunInfo::sam_sharpness)) << " | "
         << pm(get(rs, &RunInfo::lambda_max)) << " | " << f4(mean_of(get(rs, &RunInfo::seconds)) / 60) << " |\n";
    }

  // Paired comparisons: effect on forgetting with its confidence interval and the smallest
  // effect the design could have detected.
  md << "\n## Effect on forgetting, paired by seed (95% confidence intervals)\n\n"
     << "Effect = the method's change of the overall general score minus the other's, seed by seed: positive means "
        "the method forgot less. MDE: the smallest true effect a paired t-test on this many seeds detects with 80% "
        "power at the 5% level, given the spread of the differences seen here.\n\n"
     << "| target | design | method | against | pairs | effect on forgetting | 95% CI | p | MDE "
        "| MDE / its forgetting | target gain difference | 95% CI |\n"
        "|---|---|---|---|---:|---:|---|---:|---:|---:|---:|---|\n";
  std::ostringstream findings;
  auto interval = [](const MeanCi& c) { return "[" + f4(c.lo) + ", " + f4(c.hi) + "]"; };
  for (const auto& t : g.targets)
    for (const auto& cmp : g.comparisons) {
      std::vector<double> a, b, effect, gain;
      for (uint64_t seed : g.seeds) {
        const RunInfo *x = nullptr, *y = nullptr;
        for (const auto& r : runs) {
          if (r.target == t.name && r.seed == seed && r.method == cmp.method) x = &r;
          if (r.target == t.name && r.seed == seed && r.method == cmp.against) y = &r;
        }
        if (!x || !y) continue;
        a.push_back(x->delta);
        b.push_back(y->delta);
        effect.push_back(x->delta - y->delta);
        gain.push_back(x->target_gain - y->target_gain);
      }
      if (effect.empty()) continue;
      const MeanCi ce = mean_confidence_interval(effect), cg = mean_confidence_interval(gain);
      const TestResult tt = paired_t_test(a, b);
      const double mde = paired_t_min_detectable_effect(static_cast<int>(effect.size())) * ce.sd;
      const double baseline_forgetting = -mean_of(b);
      const double mde_share = baseline_forgetting > 0 ? mde / baseline_forgetting : NAN;
      md << "| " << t.name << " | " << cmp.design << " | " << cmp.method << " | " << cmp.against << " | "
         << effect.size() << " | " << f4(ce.mean) << " | " << interval(ce) << " | " << f4(tt.p_value) << " | "
         << f4(mde) << " | " << f4(mde_share) << " | " << f4(cg.mean) << " | " << interval(cg) << " |\n";
      const bool excludes_zero = effect.size() >= 2 && (ce.lo > 0 || ce.hi < 0);
      findings << "On " << t.name << " (" << cmp.design << "), " << cmp.method << " forgot "
               << (ce.mean > 0   ? "less"
                   : ce.mean < 0 ? "more"
                                 : "as much")
               << " than " << cmp.against << ": effect " << f4(ce.mean) << " on the overall general score (95% CI "
               << interval(ce) << ", p = " << f4(tt.p_value) << ", " << effect.size() << " seeds; " << cmp.against
               << " forgot " << f4(baseline_forgetting) << "). "
               << (excludes_zero ? "The interval excludes zero. "
                                 : "The interval includes zero: these seeds cannot tell the difference from noise. ")
               << "The design detects, with 80% power, an effect of " << f4(mde);
      if (std::isfinite(mde_share))
        findings << " (" << fixed1(100 * mde_share) << "% of " << cmp.against << "'s forgetting)";
      findings << "; a method that removed "
               << (std::isfinite(mde_share) && mde_share <= 0.5 ? "half of the forgetting would have been seen"
                                                                : "half of the forgetting could have been missed")
               << ". Target gain difference " << f4(cg.mean) << " (95% CI " << interval(cg) << "). ";
    }

  // Sharpness against forgetting across runs.
  md << "\n## Flatness and forgetting across runs\n\n";
  std::vector<double> lam, sams, forget;
  std::vector<std::string> labels;
  for (const auto& r : runs) {
    lam.push_back(r.lambda_max);
    sams.push_back(r.sam_sharpness);
    forget.push_back(-r.delta);
    labels.push_back(r.method + " s" + std::to_string(r.seed));
  }
  md << "| sharpness measure | Pearson r | p | Spearman ρ | p | runs |\n|---|---:|---:|---:|---:|---:|\n";
  for (const auto& [name, xs] : std::vector<std::pair<std::string, std::vector<double>>>{
           {"Hessian λmax (target data)", lam}, {"SAM sharpness", sams}}) {
    auto p = pearson(xs, forget), s = spearman(xs, forget);
    md << "| " << name << " | " << f4(p.statistic) << " | " << f4(p.p_value) << " | " << f4(s.statistic) << " | "
       << f4(s.p_value) << " | " << xs.size() << " |\n";
    if (name.rfind("Hessian", 0) == 0)
      findings << "Across the " << xs.size()
               << " runs, the Hessian's top eigenvalue correlated with forgetting at Pearson r = " << f4(p.statistic)
               << " (p = " << f4(p.p_value) << ", Spearman " << f4(s.statistic) << "): "
               << (p.statistic > 0 && p.p_value < 0.05 ? "sharper minima forgot more, as the paper claims."
                   : p.statistic > 0
                       ? "the sign the paper predicts (sharper forgets more), but not significant with this many runs."
                       : "not the relation the paper reports.")
               << " ";
  }
  try {
    plot_scatter(join_path(out, "figures/sharpness_vs_forgetting.png"),
                 "forgetting (drop of the overall general score) vs Hessian top eigenvalue",
                 "lambda max on target data", "forgetting", lam, forget, labels);
    md << "\n![sharpness vs forgetting](figures/sharpness_vs_forgetting.png)\n";
  } catch (const Error& e) {
    // Too few finite points to draw (a run without λmax): the report goes on without the figure.
    log_warn(std::string("report: no sharpness scatter plot: ") + e.what());
  }
  // Surfaces and interpolation, first seed of each method.
  for (const char* key : {"surface_target", "surface_general", "interpolation_target", "interpolation_general"}) {
    std::vector<Series> series;
    for (const auto& r : runs)
      if (r.seed == g.seeds[0] && r.flat.contains(key))
        series.push_back({r.target + " " + r.method, r.flat[key]["alphas"].get<std::vector<double>>(),
                          r.flat[key]["losses"].get<std::vector<double>>()});
    if (series.empty()) continue;
    std::string k = key;
    bool interp = k.rfind("interpolation", 0) == 0;
    std::string data = k.find("target") != std::string::npos ? "target-task data" : "general held-out text";
    std::string title = interp ? "loss from the before model (0) to the tuned model (1), " + data
                               : "loss along a filter-normalised random direction, " + data;
    plot_lines(join_path(out, "figures/" + k + ".png"), title,
               interp ? "interpolation alpha" : "step along the direction", "loss", series);
    md << "\n![" << k << "](figures/" << k << ".png)\n";
  }
  // Wise-FT trade-off: per method, the mean over seeds at each alpha of the sweep.
  if (!g.wiseft_sweep.empty()) {
    md << "\n## Wise-FT trade-off (before → tuned merged at α; mean over seeds)\n\n"
       << "| target | method | α | seeds | forgetting (drop of the overall general score) | target gain "
          "|\n|---|---|---:|---:|---:|---:|\n";
    std::vector<Series> curves;
    for (const auto& t : g.targets)
      for (const auto& m : g.methods) {
        std::map<double, std::vector<double>> forget_at, gain_at;
        for (const auto& r : runs) {
          const std::string f = wiseft_sweep_json_file(experiment_layout::wiseft_sweep_dir(r.dir));
          if (r.target != t.name || r.method != m.name || !file_exists(f)) continue;
          const json sweep = read_json_file(f);  // kept: a range over a temporary's member would dangle
          for (const auto& row : sweep.at("rows")) {
            forget_at[row.at("alpha").get<double>()].push_back(row.at("forgetting").get<double>());
            gain_at[row.at("alpha").get<double>()].push_back(row.at("target_gain").get<double>());
          }
        }
        if (forget_at.empty()) continue;
        Series curve{t.name + " " + m.name, {}, {}};
        for (const auto& [alpha, fs_] : forget_at) {
          md << "| " << t.name << " | " << m.name << " | " << alpha << " | " << fs_.size() << " | " << pm(fs_) << " | "
             << pm(gain_at[alpha]) << " |\n";
          curve.x.push_back(mean_of(fs_));
          curve.y.push_back(mean_of(gain_at[alpha]));
        }
        curves.push_back(curve);
      }
    if (!curves.empty()) {
      plot_lines(join_path(out, "figures/wiseft_tradeoff.png"),
                 "Wise-FT: target gain against forgetting as alpha goes 0 -> 1", "forgetting", "target gain", curves);
      md << "\n![Wise-FT trade-off](figures/wiseft_tradeoff.png)\n";
    }
  }
  // Forgetting watched during training: methods compared at matched target gain (a method that
  // learns the target more slowly also forgets more slowly, so equal steps alone confound the two).
  if (g.watch) {
    md << "\n## Forgetting at matched target gain (watched during training)\n\n";
    for (const auto& t : g.targets) {
      std::vector<MethodCurves> methods;
      std::vector<WatchCurve> all;
      for (const auto& m : g.methods) {
        MethodCurves mc{m.name, {}};
        for (const auto& r : runs)
          if (r.target == t.name && r.method == m.name && file_exists(join_path(r.dir, "watch.csv")))
            mc.runs.push_back(read_watch_csv(r.dir, r.name));
        all.insert(all.end(), mc.runs.begin(), mc.runs.end());
        if (!mc.runs.empty()) methods.push_back(mc);
      }
      if (methods.empty()) continue;
      auto rows = matched_gain_table(methods);
      md << "Target " << t.name << ": forgetting (drop of the overall general score since step 0) interpolated along "
         << "each run's trade-off curve at the same target gains; runs that never reach a gain are left out.\n\n"
         << (rows.empty() ? "No run gained on the target, so there is no gain to match.\n"
                          : matched_gain_markdown(rows));
      for (const auto& f : write_watch_figures(all, join_path(out, "figures/watch_" + t.name)))
        if (f.size() > 4 && f.compare(f.size() - 4, 4, ".png") == 0 && f.find("tradeoff") != std::string::npos)
          md << "\n![trade-off " << t.name << "](" << fs::relative(f, out).string() << ")\n";
    }
  }
  md << "\n## Findings\n\n"
     << findings.str() << "\n\nThese are the numbers this run produced on a small model; they are reported as found, "
     << "whether or not they agree with the paper.\n";
  write_file_atomic(join_path(out, "report.md"), md.str());
  write_file_atomic(join_path(out, "report.html"), to_html(md.str(), out));
}

}  // namespace flatune
