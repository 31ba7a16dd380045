// Statistics for reports: mean and sample standard deviation, a paired t-test with its
// confidence interval and power, Pearson and Spearman correlations with two-sided p-values
// (Student's t with n-2 degrees of freedom).
#pragma once
#include <vector>

namespace flatune {

double mean_of(const std::vector<double>& x);
double sample_std(const std::vector<double>& x);  // n-1 in the denominator; 0 for n < 2

struct TestResult {
  double statistic = 0;  // t, or the correlation coefficient
  double p_value = 1;
  int n = 0;
};

// Two-sided p-value of Student's t with `dof` degrees of freedom.
double student_t_two_sided_p(double t, double dof);

// Student's t distribution: P(T <= t), and the t with P(T <= t) = p (0 < p < 1).
double student_t_cdf(double t, double dof);
double student_t_quantile(double p, double dof);
// Noncentral t: P(T <= t) for `dof` degrees of freedom and noncentrality `ncp`.
double noncentral_t_cdf(double t, double dof, double ncp);

// Mean of paired differences with a two-sided confidence interval (Student's t, n-1 dof);
// the interval is empty (lo = hi = mean) below 2 pairs.
struct MeanCi {
  double mean = 0, lo = 0, hi = 0, sd = 0;
  int n = 0;
};
MeanCi mean_confidence_interval(const std::vector<double>& x, double level = 0.95);

// Power of the two-sided paired t-test at level alpha with n pairs when the true mean
// difference is `effect` standard deviations of the differences.
double paired_t_power(int n, double effect, double alpha = 0.05);
// The smallest true mean difference (in the differences' standard deviations) that test
// detects with the given power: the design's minimum detectable effect. Infinite below 2 pairs.
double paired_t_min_detectable_effect(int n, double alpha = 0.05, double power = 0.8);

// Paired t-test of a - b (p = 1 when fewer than 2 pairs or no variance and mean 0).
TestResult paired_t_test(const std::vector<double>& a, const std::vector<double>& b);
TestResult pearson(const std::vector<double>& x, const std::vector<double>& y);
// Pearson on average ranks (ties share the mean of their ranks).
TestResult spearman(const std::vector<double>& x, const std::vector<double>& y);
std::vector<double> average_ranks(const std::vector<double>& x);

}  // namespace flatune
