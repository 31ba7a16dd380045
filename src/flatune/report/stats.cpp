#include "flatune/report/stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "flatune/core/error.h"

namespace flatune {

double mean_of(const std::vector<double>& x) {
  return x.empty() ? 0 : std::accumulate(x.begin(), x.end(), 0.0) / x.size();
}

double sample_std(const std::vector<double>& x) {
  if (x.size() < 2) return 0;
  double m = mean_of(x), s = 0;
  for (double v : x) s += (v - m) * (v - m);
  return std::sqrt(s / (x.size() - 1));
}

namespace {
// Continued fraction for the regularized incomplete beta function (modified Lentz).
double beta_cf(double a, double b, double x) {
  const double tiny = 1e-300;
  double c = 1, d = 1 - (a + b) * x / (a + 1);
  if (std::abs(d) < tiny) d = tiny;
  d = 1 / d;
  double h = d;
  for (int m = 1; m <= 500; ++m) {
    double m2 = 2.0 * m;
    double num = m * (b - m) * x / ((a + m2 - 1) * (a + m2));
    d = 1 + num * d;
    if (std::abs(d) < tiny) d = tiny;
    c = 1 + num / c;
    if (std::abs(c) < tiny) c = tiny;
    d = 1 / d;
    h *= d * c;
    num = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1));
    d = 1 + num * d;
    if (std::abs(d) < tiny) d = tiny;
    c = 1 + num / c;
    if (std::abs(c) < tiny) c = tiny;
    d = 1 / d;
    double delta = d * c;
    h *= delta;
    if (std::abs(delta - 1) < 1e-15) break;
  }
  return h;
}

double incomplete_beta(double a, double b, double x) {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  double front = std::exp(std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) + b * std::log1p(-x));
  if (x < (a + 1) / (a + b + 2)) return front * beta_cf(a, b, x) / a;
  return 1 - front * beta_cf(b, a, 1 - x) / b;
}
}  // namespace

double student_t_two_sided_p(double t, double dof) {
  if (!std::isfinite(t)) return 0;
  return incomplete_beta(dof / 2, 0.5, dof / (dof + t * t));
}

double student_t_cdf(double t, double dof) {
  if (std::isnan(t)) return NAN;
  if (std::isinf(t)) return t > 0 ? 1 : 0;
  const double tail = 0.5 * incomplete_beta(dof / 2, 0.5, dof / (dof + t * t));
  return t > 0 ? 1 - tail : tail;
}

double student_t_quantile(double p, double dof) {
  if (!(p > 0 && p < 1)) fail("t quantile", "probability must be in (0, 1)");
  // The CDF is increasing: bisection on a bracket wide enough for dof >= 1 and p in [1e-12, 1-1e-12].
  double lo = -1e7, hi = 1e7;
  for (int i = 0; i < 200 && hi - lo > 1e-13 * std::max(1.0, std::abs(lo)); ++i) {
    const double mid = 0.5 * (lo + hi);
    (student_t_cdf(mid, dof) < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

double noncentral_t_cdf(double t, double dof, double ncp) {
  // T = (Z + ncp) / sqrt(V / dof) with V chi-square: P(T <= t) = E_S[Phi(t S / sqrt(dof) - ncp)]
  // over S = sqrt(V), whose density s^(dof-1) exp(-s^2/2) / (2^(dof/2-1) Gamma(dof/2)) is finite
  // at 0 for every dof >= 1; Simpson's rule on [0, sqrt(dof) + 12] (the mass beyond is < 1e-30).
  const int steps = 4000;
  const double top = std::sqrt(dof) + 12, h = top / steps;
  const double log_norm = (dof / 2 - 1) * std::log(2.0) + std::lgamma(dof / 2);
  auto f = [&](double s) {
    const double density =
        s == 0 ? (dof == 1 ? std::exp(-log_norm) : 0) : std::exp((dof - 1) * std::log(s) - s * s / 2 - log_norm);
    return density * 0.5 * std::erfc(-(t * s / std::sqrt(dof) - ncp) / std::sqrt(2.0));
  };
  double sum = f(0) + f(top);
  for (int i = 1; i < steps; ++i) sum += f(i * h) * (i % 2 ? 4 : 2);
  return std::clamp(sum * h / 3, 0.0, 1.0);
}

MeanCi mean_confidence_interval(const std::vector<double>& x, double level) {
  MeanCi c;
  c.n = static_cast<int>(x.size());
  c.mean = c.lo = c.hi = mean_of(x);
  c.sd = sample_std(x);
  if (c.n < 2) return c;
  const double half = student_t_quantile(0.5 + level / 2, c.n - 1) * c.sd / std::sqrt(static_cast<double>(c.n));
  c.lo = c.mean - half;
  c.hi = c.mean + half;
  return c;
}

double paired_t_power(int n, double effect, double alpha) {
  if (n < 2) return 0;
  const double dof = n - 1, critical = student_t_quantile(1 - alpha / 2, dof);
  const double ncp = effect * std::sqrt(static_cast<double>(n));
  return 1 - noncentral_t_cdf(critical, dof, ncp) + noncentral_t_cdf(-critical, dof, ncp);
}

double paired_t_min_detectable_effect(int n, double alpha, double power) {
  if (n < 2) return INFINITY;
  double lo = 0, hi = 1;
  while (paired_t_power(n, hi, alpha) < power) {
    hi *= 2;
    if (hi > 1e6) return INFINITY;
  }
  for (int i = 0; i < 60; ++i) {
    const double mid = 0.5 * (lo + hi);
    (paired_t_power(n, mid, alpha) < power ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

TestResult paired_t_test(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) fail("paired t-test", "samples differ in length");
  TestResult r;
  r.n = static_cast<int>(a.size());
  if (r.n < 2) return r;
  std::vector<double> d;
  for (size_t i = 0; i < a.size(); ++i) d.push_back(a[i] - b[i]);
  double m = mean_of(d), s = sample_std(d);
  if (s == 0) {
    r.statistic = m == 0 ? 0 : std::copysign(INFINITY, m);
    r.p_value = m == 0 ? 1 : 0;
    return r;
  }
  r.statistic = m / (s / std::sqrt(static_cast<double>(r.n)));
  r.p_value = student_t_two_sided_p(r.statistic, r.n - 1);
  return r;
}

TestResult pearson(const std::vector<double>& x, const std::vector<double>& y) {
  if (x.size() != y.size()) fail("correlation", "samples differ in length");
  TestResult r;
  r.n = static_cast<int>(x.size());
  if (r.n < 3) return r;
  double mx = mean_of(x), my = mean_of(y), sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  if (sxx == 0 || syy == 0) return r;
  r.statistic = sxy / std::sqrt(sxx * syy);
  double rr = std::min(1.0, std::abs(r.statistic));
  r.p_value = rr >= 1 ? 0 : student_t_two_sided_p(rr * std::sqrt((r.n - 2) / (1 - rr * rr)), r.n - 2);
  return r;
}

std::vector<double> average_ranks(const std::vector<double>& x) {
  std::vector<size_t> idx(x.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return x[a] < x[b]; });
  std::vector<double> r(x.size());
  for (size_t i = 0; i < idx.size();) {
    size_t j = i;
    while (j + 1 < idx.size() && x[idx[j + 1]] == x[idx[i]]) ++j;
    double avg = (i + j) / 2.0 + 1;
    for (size_t k = i; k <= j; ++k) r[idx[k]] = avg;
    i = j + 1;
  }
  return r;
}

TestResult spearman(const std::vector<double>& x, const std::vector<double>& y) {
  return pearson(average_ranks(x), average_ranks(y));
}

}  // namespace flatune
