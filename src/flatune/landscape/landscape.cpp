#include "flatune/landscape/landscape.h"

#include <cmath>
#include <cstdio>

#include "flatune/core/error.h"
#include "flatune/core/progress.h"

namespace flatune {

namespace {

bool is_lora(const std::string& n) {
  return n.find("lora_A") != std::string::npos || n.find("lora_B") != std::string::npos;
}

// Copies of the weights; restores them bit for bit when it goes out of scope.
struct WeightGuard {
  const NamedParams& params;
  std::vector<torch::Tensor> saved;
  explicit WeightGuard(const NamedParams& p) : params(p) {
    for (auto& [n, t] : p) saved.push_back(t.detach().clone());
  }
  void restore() {
    torch::NoGradGuard ng;
    for (size_t i = 0; i < saved.size(); ++i) params[i].second.detach().copy_(saved[i]);
  }
  ~WeightGuard() { restore(); }
};

// w <- w0 + sum_k coef_k d_k
void set_weights(WeightGuard& g, const std::vector<const NamedTensors*>& dirs, const std::vector<double>& coefs) {
  torch::NoGradGuard ng;
  for (size_t i = 0; i < g.saved.size(); ++i) {
    torch::Tensor w = g.saved[i].clone();
    for (size_t k = 0; k < dirs.size(); ++k) w.add_((*dirs[k])[i].second.to(w.options()), coefs[k]);
    g.params[i].second.detach().copy_(w);
  }
}

void sum_across(const LossClosure& loss, std::vector<torch::Tensor>& ts) {
  if (loss.sum_across) loss.sum_across(ts);
}

std::vector<torch::Tensor> grads_of(const NamedParams& params, const LossClosure& loss, double* value) {
  std::vector<torch::Tensor> ps;
  for (auto& [n, t] : params) ps.push_back(t);
  torch::Tensor l = loss.share();
  auto g = torch::autograd::grad({l}, ps, {}, false, false, true);
  if (loss.sum_across) {
    // Every process needs every tensor in the sum, so unused ones become zeros.
    for (size_t i = 0; i < g.size(); ++i)
      if (!g[i].defined()) g[i] = torch::zeros_like(ps[i]);
    g.push_back(l.detach().to(torch::kDouble).reshape({1}));
    sum_across(loss, g);
    *value = g.back().item<double>();
    g.pop_back();
  } else {
    *value = l.item<double>();
  }
  return g;
}

double dot(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].defined() && b[i].defined()) s += (a[i].to(torch::kDouble) * b[i].to(torch::kDouble)).sum().item<double>();
  return s;
}

}  // namespace

double loss_value(const LossClosure& loss) {
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> v = {loss.share().detach().to(torch::kDouble).reshape({1})};
  sum_across(loss, v);
  return v[0].item<double>();
}

NamedTensors random_direction(const NamedParams& params, const DirectionOptions& o) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  NamedTensors dir;
  for (const auto& [name, w] : params) {
    // Drawn on the CPU from a seeded generator, so a direction is the same on every device.
    torch::Tensor d =
        torch::randn(w.sizes(), gen, torch::TensorOptions().dtype(torch::kFloat)).to(w.device(), w.scalar_type());
    bool excluded = (o.lora_only && !is_lora(name)) || (w.dim() <= 1 && !o.keep_1d);
    if (excluded) {
      d.zero_();
    } else if (o.filter_normalize) {
      torch::NoGradGuard ng;
      if (w.dim() <= 1) {
        d.mul_(w.detach().norm() / (d.norm() + 1e-10));
      } else {
        auto wr = w.detach().reshape({w.size(0), -1}), dr = d.reshape({w.size(0), -1});
        dr.mul_(wr.norm(2, 1, true) / (dr.norm(2, 1, true) + 1e-10));
      }
    }
    dir.emplace_back(name, d);
  }
  return dir;
}

NamedTensors difference_direction(const NamedTensors& from, const NamedTensors& to, const std::string& where) {
  // In `to`'s order (the model's), whatever order the file stored `from` in.
  std::map<std::string, torch::Tensor> f(from.begin(), from.end());
  NamedTensors out;
  for (const auto& [name, t] : to) {
    auto it = f.find(name);
    if (it == f.end() || !it->second.sizes().equals(t.sizes()))
      fail(where, "tensor '" + name + "' differs between the two models");
    out.emplace_back(name, t - it->second.to(t.dtype()));
  }
  if (f.size() != to.size()) fail(where, "the two models have different tensors");
  return out;
}

void check_direction(const NamedParams& params, const NamedTensors& dir, const std::string& where) {
  if (dir.size() != params.size())
    fail(where, "direction has " + std::to_string(dir.size()) + " tensors, the model " + std::to_string(params.size()));
  for (size_t i = 0; i < params.size(); ++i) {
    if (dir[i].first != params[i].first)
      fail(where, "direction tensor '" + dir[i].first + "' where the model has '" + params[i].first + "'");
    if (!dir[i].second.sizes().equals(params[i].second.sizes()))
      fail(where, "direction tensor '" + dir[i].first + "' has the wrong shape");
  }
}

Surface1D surface_1d(const NamedParams& params, const NamedTensors& dir, const LossClosure& loss, double from,
                     double to, int points) {
  if (points < 2) fail("--points", "a surface needs at least 2 points");
  check_direction(params, dir, "direction");
  WeightGuard g(params);
  Surface1D s;
  Progress progress("surface 1d", points, "pt");
  for (int i = 0; i < points; ++i) {
    double a = from + (to - from) * i / (points - 1);
    set_weights(g, {&dir}, {a});
    s.alphas.push_back(a);
    s.losses.push_back(loss_value(loss));
    progress.update(i + 1);
  }
  progress.finish();
  return s;
}

Surface2D surface_2d(const NamedParams& params, const NamedTensors& d1, const NamedTensors& d2, const LossClosure& loss,
                     double range, int points) {
  return surface_2d(params, d1, d2, loss, -range, range, points);
}

Surface2D surface_2d(const NamedParams& params, const NamedTensors& d1, const NamedTensors& d2, const LossClosure& loss,
                     double from, double to, int points) {
  if (points < 3) fail("--points", "a 2-D surface needs at least 3 points per axis");
  check_direction(params, d1, "direction 1");
  check_direction(params, d2, "direction 2");
  WeightGuard g(params);
  Surface2D s;
  for (int i = 0; i < points; ++i) s.alphas.push_back(from + (to - from) * i / (points - 1));
  s.betas = s.alphas;
  Progress progress("surface 2d", static_cast<int64_t>(points) * points, "pt");
  for (int i = 0; i < points; ++i) {
    s.losses.emplace_back();
    for (int j = 0; j < points; ++j) {
      set_weights(g, {&d1, &d2}, {s.alphas[i], s.betas[j]});
      s.losses.back().push_back(loss_value(loss));
      progress.update(static_cast<int64_t>(i) * points + j + 1);
    }
  }
  progress.finish();
  return s;
}

SurfaceStats surface_stats(const Surface2D& s) {
  SurfaceStats st;
  const size_t n = s.alphas.size();
  if (n < 3) return st;
  const double h = s.alphas[1] - s.alphas[0];
  double curv = 0, grad = 0, absg = 0;
  int count = 0;
  for (size_t i = 1; i + 1 < n; ++i)
    for (size_t j = 1; j + 1 < n; ++j) {
      const auto& f = s.losses;
      curv += std::abs(f[i + 1][j] + f[i - 1][j] + f[i][j + 1] + f[i][j - 1] - 4 * f[i][j]) / (h * h);
      double ga = (f[i + 1][j] - f[i - 1][j]) / (2 * h), gb = (f[i][j + 1] - f[i][j - 1]) / (2 * h);
      grad += std::sqrt(ga * ga + gb * gb);
      absg += (std::abs(ga) + std::abs(gb)) / 2;
      ++count;
    }
  st.curvature = curv / count;
  st.average_gradient = grad / count;
  st.mean_abs_gradient = absg / count;
  return st;
}

SharpnessValue sam_sharpness(const NamedParams& params, const LossClosure& loss, double rho) {
  WeightGuard guard(params);
  double base = 0;
  auto g = grads_of(params, loss, &base);
  double n = std::sqrt(dot(g, g));
  NamedTensors e;
  for (size_t i = 0; i < params.size(); ++i)
    e.emplace_back(params[i].first, g[i].defined() && n > 0 ? g[i] * (rho / n) : torch::zeros_like(params[i].second));
  set_weights(guard, {&e}, {1.0});
  SharpnessValue v;
  v.value = loss_value(loss) - base;
  v.iterations = 1;
  return v;
}

SharpnessValue epsilon_sharpness(const NamedParams& params, const LossClosure& loss, double eps, int steps) {
  WeightGuard guard(params);
  const double base = loss_value(loss);
  // Box |delta_i| <= eps (|w_i| + 1); ascent by sign steps of a fifth of the box per step (a
  // few steps reach the corners that maximise a locally linear loss), projected back.
  std::vector<torch::Tensor> bound, delta;
  for (auto& w : guard.saved) {
    bound.push_back(eps * (w.abs() + 1));
    delta.push_back(torch::zeros_like(w));
  }
  double best = base;
  SharpnessValue v;
  for (int s = 0; s < steps; ++s) {
    double val = 0;
    auto g = grads_of(params, loss, &val);
    best = std::max(best, val);
    torch::NoGradGuard ng;
    NamedTensors d;
    for (size_t i = 0; i < delta.size(); ++i) {
      if (g[i].defined())
        delta[i] = torch::max(torch::min(delta[i] + g[i].sign() * bound[i] * 0.2, bound[i]), -bound[i]);
      d.emplace_back(params[i].first, delta[i]);
    }
    set_weights(guard, {&d}, {1.0});
    v.iterations = s + 1;
  }
  best = std::max(best, loss_value(loss));
  v.detail = best - base;                          // absolute increase
  v.value = 100.0 * (best - base) / (1.0 + base);  // Keskar et al.'s relative measure
  return v;
}

SharpnessValue average_sharpness(const NamedParams& params, const LossClosure& loss, double sigma, int samples,
                                 uint64_t seed) {
  WeightGuard guard(params);
  const double base = loss_value(loss);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<double> incs;
  for (int s = 0; s < samples; ++s) {
    NamedTensors d;
    for (size_t i = 0; i < guard.saved.size(); ++i)
      d.emplace_back(params[i].first,
                     torch::randn(guard.saved[i].sizes(), gen, torch::TensorOptions().dtype(torch::kFloat))
                             .to(guard.saved[i].device(), guard.saved[i].scalar_type()) *
                         guard.saved[i].abs() * sigma);
    set_weights(guard, {&d}, {1.0});
    incs.push_back(loss_value(loss) - base);
  }
  SharpnessValue v;
  double m = 0;
  for (double x : incs) m += x;
  m /= incs.size();
  double var = 0;
  for (double x : incs) var += (x - m) * (x - m);
  v.value = m;
  v.iterations = samples;
  v.detail = incs.size() > 1 ? std::sqrt(var / (incs.size() - 1) / incs.size()) : 0;
  return v;
}

std::vector<torch::Tensor> hessian_vector_product(const NamedParams& params, const LossClosure& loss,
                                                  const std::vector<torch::Tensor>& v) {
  std::vector<torch::Tensor> ps;
  for (auto& [n, t] : params) ps.push_back(t);
  torch::Tensor l = loss.share_twice_differentiable ? loss.share_twice_differentiable() : loss.share();
  auto g = torch::autograd::grad({l}, ps, {}, true, true, true);
  torch::Tensor gv = torch::zeros({}, l.options());
  for (size_t i = 0; i < g.size(); ++i)
    if (g[i].defined()) gv = gv + (g[i] * v[i].to(g[i].dtype())).sum();
  auto hv = torch::autograd::grad({gv}, ps, {}, false, false, true);
  for (size_t i = 0; i < hv.size(); ++i)
    if (!hv[i].defined()) hv[i] = torch::zeros_like(ps[i]);
  sum_across(loss, hv);  // H v is linear in the loss: the parts' products add up to the whole's
  return hv;
}

namespace {

// Power iteration on (H - shift I): converges to its eigenvalue of largest magnitude.
SharpnessValue power_iteration(const NamedParams& params, const LossClosure& loss, int max_iters, double tol,
                               uint64_t seed, double shift) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<torch::Tensor> v;
  for (auto& [n, t] : params)
    v.push_back(torch::randn(t.sizes(), gen, torch::TensorOptions().dtype(torch::kDouble)).to(t.device()));
  double n = std::sqrt(dot(v, v));
  for (auto& x : v) x.div_(n);
  SharpnessValue out;
  out.converged = false;
  double lambda = 0;
  for (int it = 0; it < max_iters; ++it) {
    auto hv = hessian_vector_product(params, loss, v);
    for (size_t i = 0; i < hv.size(); ++i) hv[i] = hv[i].to(torch::kDouble) - shift * v[i];
    double next = dot(hv, v);  // Rayleigh quotient with the unit v
    double hn = std::sqrt(dot(hv, hv));
    out.iterations = it + 1;
    if (hn == 0) {
      lambda = 0;
      out.converged = true;
      break;
    }
    for (size_t i = 0; i < v.size(); ++i) v[i] = hv[i] / hn;
    if (it > 0 && std::abs(next - lambda) <= tol * std::abs(next)) {
      lambda = next;
      out.converged = true;
      break;
    }
    lambda = next;
  }
  out.value = lambda;
  return out;
}

}  // namespace

SharpnessValue hessian_top_eigenvalue(const NamedParams& params, const LossClosure& loss, int max_iters, double tol,
                                      uint64_t seed) {
  // Plain power iteration finds the eigenvalue of largest magnitude. Away from a minimum that
  // can be a negative one; then the top eigenvalue is the largest of H - lambda I (all of whose
  // eigenvalues are >= 0) plus lambda: a second run, shifted.
  SharpnessValue dominant = power_iteration(params, loss, max_iters, tol, seed, 0.0);
  dominant.detail = dominant.value;
  if (dominant.value >= 0) return dominant;
  SharpnessValue top = power_iteration(params, loss, max_iters, tol, seed + 1, dominant.value);
  top.value += dominant.value;
  top.iterations += dominant.iterations;
  top.converged = top.converged && dominant.converged;
  top.detail = dominant.value;
  return top;
}

SharpnessValue hessian_trace(const NamedParams& params, const LossClosure& loss, int samples, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<double> est;
  for (int s = 0; s < samples; ++s) {
    std::vector<torch::Tensor> v;
    for (auto& [n, t] : params)
      v.push_back(
          (torch::randint(0, 2, t.sizes(), gen, torch::TensorOptions().dtype(torch::kDouble)) * 2 - 1).to(t.device()));
    est.push_back(dot(hessian_vector_product(params, loss, v), v));
  }
  SharpnessValue out;
  double m = 0;
  for (double x : est) m += x;
  m /= est.size();
  double var = 0;
  for (double x : est) var += (x - m) * (x - m);
  out.value = m;
  out.iterations = samples;
  out.detail = est.size() > 1 ? std::sqrt(var / (est.size() - 1) / est.size()) : 0;
  return out;
}

json surface_1d_json(const Surface1D& s) { return {{"alphas", s.alphas}, {"losses", s.losses}}; }
json surface_2d_json(const Surface2D& s) { return {{"alphas", s.alphas}, {"betas", s.betas}, {"losses", s.losses}}; }

namespace {
std::string g17(double x) {
  char b[40];
  std::snprintf(b, sizeof b, "%.17g", x);
  return b;
}
}  // namespace

std::string surface_1d_csv(const Surface1D& s) {
  std::string out = "alpha,loss\n";
  for (size_t i = 0; i < s.alphas.size(); ++i) out += g17(s.alphas[i]) + "," + g17(s.losses[i]) + "\n";
  return out;
}

std::string surface_2d_csv(const Surface2D& s) {
  std::string out = "alpha,beta,loss\n";
  for (size_t i = 0; i < s.alphas.size(); ++i)
    for (size_t j = 0; j < s.betas.size(); ++j)
      out += g17(s.alphas[i]) + "," + g17(s.betas[j]) + "," + g17(s.losses[i][j]) + "\n";
  return out;
}

}  // namespace flatune
