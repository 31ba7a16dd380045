// Statistics for reports: mean and sample standard deviation, a paired t-test, Pearson and
// Spearman correlations with two-sided p-values (Student's t with n-2 degrees of freedom).
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

// Paired t-test of a - b (p = 1 when fewer than 2 pairs or no variance and mean 0).
TestResult paired_t_test(const std::vector<double>& a, const std::vector<double>& b);
TestResult pearson(const std::vector<double>& x, const std::vector<double>& y);
// Pearson on average ranks (ties share the mean of their ranks).
TestResult spearman(const std::vector<double>& x, const std::vector<double>& y);
std::vector<double> average_ranks(const std::vector<double>& x);

}  // namespace flatune
