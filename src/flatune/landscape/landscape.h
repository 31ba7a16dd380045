// Flatness of the place training ended: loss surfaces along directions and sharpness metrics.
// Model-agnostic: everything works on named parameter tensors and a loss closure (the loss over
// fixed batches at the current weights). Every function leaves the weights bit-identical to
// what they were (it keeps copies and restores them).
#pragma once
#include <torch/torch.h>

#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "flatune/core/json.h"
#include "flatune/io/safetensors.h"

namespace flatune {

using NamedParams = std::vector<std::pair<std::string, torch::Tensor>>;

// Adds tensors across processes, in place (an all-reduce sum).
using CrossProcessSum = std::function<void(std::vector<torch::Tensor>&)>;

// The scalar loss at the current weights. Data parallel, `share` is this process's part of it
// (its batches' summed loss over the tokens of every process's batches) and `sum_across` adds
// parts across processes: every loss value, gradient and Hessian-vector product below is summed
// before it is used, so all processes see the whole loss and walk the same path. One process:
// `sum_across` is empty and `share` is the loss.
struct LossClosure {
  std::function<torch::Tensor()> share;
  CrossProcessSum sum_across;
  // `share` computed through twice-differentiable ops, for Hessian-vector products (a model's
  // fused attention has a backward that is not itself differentiable); empty: `share` is.
  std::function<torch::Tensor()> share_twice_differentiable;

  LossClosure() = default;
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, LossClosure> &&
                                                    std::is_invocable_r_v<torch::Tensor, F&>>>
  LossClosure(F f, CrossProcessSum sum = {}) : share(std::move(f)), sum_across(std::move(sum)) {}
};

// The whole loss at the current weights, without a graph.
double loss_value(const LossClosure& loss);

// ---- directions

struct DirectionOptions {
  uint64_t seed = 0;
  bool filter_normalize = true;  // Li et al. 2018: each output row scaled to the weight row's norm
  bool keep_1d = true;           // 1-D parameters (norms, biases): zeroed unless kept
  bool lora_only = false;        // only parameters whose name has lora_A/lora_B
};

// A Gaussian direction over the parameters (same names and shapes), seeded.
NamedTensors random_direction(const NamedParams& params, const DirectionOptions& o);
// to - from, by name (the base -> tuned direction).
NamedTensors difference_direction(const NamedTensors& from, const NamedTensors& to, const std::string& where);
// Errors naming `where` unless every parameter has a direction of its shape.
void check_direction(const NamedParams& params, const NamedTensors& dir, const std::string& where);

// ---- surfaces

struct Surface1D {
  std::vector<double> alphas, losses;
};
struct Surface2D {
  std::vector<double> alphas, betas;
  std::vector<std::vector<double>> losses;  // [alpha][beta]
};

// loss(w + a d) for a in linspace(-range, range, points) (or [from, to] for interpolation).
Surface1D surface_1d(const NamedParams& params, const NamedTensors& dir, const LossClosure& loss, double from,
                     double to, int points);
Surface2D surface_2d(const NamedParams& params, const NamedTensors& d1, const NamedTensors& d2, const LossClosure& loss,
                     double range, int points);
// The same over [from, to] on both axes.
Surface2D surface_2d(const NamedParams& params, const NamedTensors& d1, const NamedTensors& d2, const LossClosure& loss,
                     double from, double to, int points);

// Seed paper's surface statistics over a 2-D grid with spacing h (finite differences, interior
// points): curvature = mean |f(i+1,j) + f(i-1,j) + f(i,j+1) + f(i,j-1) - 4 f(i,j)| / h^2;
// average gradient = mean ||(df/da, df/db)|| (central differences);
// mean absolute gradient = mean (|df/da| + |df/db|) / 2.
struct SurfaceStats {
  double curvature = 0, average_gradient = 0, mean_abs_gradient = 0;
};
SurfaceStats surface_stats(const Surface2D& s);

// ---- sharpness

struct SharpnessValue {
  double value = 0;
  int64_t iterations = 0;
  bool converged = true;
  double detail = 0;  // metric-specific (e.g. the standard error of an estimate)
};

// L(w + rho g/||g||) - L(w)
SharpnessValue sam_sharpness(const NamedParams& params, const LossClosure& loss, double rho);
// Keskar et al. 2017: max over |delta_i| <= eps (|w_i| + 1) of L(w + delta) - L(w), by projected
// gradient ascent (sign steps of eps/steps... ); value reported as 100 * max / (1 + L(w)).
SharpnessValue epsilon_sharpness(const NamedParams& params, const LossClosure& loss, double eps, int steps);
// E[L(w + sigma |w| * z)] - L(w), z ~ N(0, I), estimated from `samples` draws (detail: stderr).
SharpnessValue average_sharpness(const NamedParams& params, const LossClosure& loss, double sigma, int samples,
                                 uint64_t seed);
// Top (largest, not largest in magnitude) Hessian eigenvalue by power iteration on
// Hessian-vector products (double backward); stops when the relative change is below tol
// (converged) or after max_iters. When the dominant eigenvalue is negative a second, shifted
// run finds the top one (detail: the dominant eigenvalue).
SharpnessValue hessian_top_eigenvalue(const NamedParams& params, const LossClosure& loss, int max_iters, double tol,
                                      uint64_t seed);
// Hutchinson: E[v^T H v] with Rademacher v (detail: stderr of the mean).
SharpnessValue hessian_trace(const NamedParams& params, const LossClosure& loss, int samples, uint64_t seed);

// Hessian-vector product at the current weights.
std::vector<torch::Tensor> hessian_vector_product(const NamedParams& params, const LossClosure& loss,
                                                  const std::vector<torch::Tensor>& v);

json surface_1d_json(const Surface1D& s);
json surface_2d_json(const Surface2D& s);
// CSV with every digit a double holds (%.17g): "alpha,loss" rows; "alpha,beta,loss" rows.
std::string surface_1d_csv(const Surface1D& s);
std::string surface_2d_csv(const Surface2D& s);

}  // namespace flatune
