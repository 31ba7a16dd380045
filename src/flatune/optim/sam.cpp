#include "flatune/optim/sam.h"

#include <cmath>

#include "flatune/core/error.h"

namespace flatune {

namespace {
// a . b over all tensors, a 0-dim float64 tensor on their device (nothing waits for it).
torch::Tensor dot(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  std::vector<torch::Tensor> parts;
  for (size_t i = 0; i < a.size(); ++i)
    parts.push_back(torch::dot(a[i].reshape({-1}), b[i].reshape({-1})).to(torch::kDouble));
  return torch::stack(parts).sum();
}
// numerator / denominator, or 0 where the denominator is 0 (as `d > 0 ? n / d : 0` on numbers).
torch::Tensor ratio_or_zero(const torch::Tensor& numerator, const torch::Tensor& denominator) {
  return torch::where(denominator > 0, numerator / denominator, torch::zeros_like(denominator));
}

// While alive, the given parameters do not require a gradient (and do again afterwards, also
// when the pass throws).
class GradientsOff {
 public:
  explicit GradientsOff(std::vector<torch::Tensor> params) : params_(std::move(params)) {
    for (auto& t : params_) t.set_requires_grad(false);
  }
  ~GradientsOff() {
    for (auto& t : params_) t.set_requires_grad(true);
  }
  GradientsOff(const GradientsOff&) = delete;
  GradientsOff& operator=(const GradientsOff&) = delete;

 private:
  std::vector<torch::Tensor> params_;
};
}  // namespace

SamStepper::SamStepper(NamedParams params, torch::optim::Optimizer& base, SamSettings s, double max_grad_norm,
                       std::function<void()> grad_sync, SamShardHooks shard)
    : params_(std::move(params)),
      base_(base),
      s_(std::move(s)),
      max_grad_norm_(max_grad_norm),
      grad_sync_(std::move(grad_sync)),
      shard_(std::move(shard)) {
  static const std::vector<std::string> kinds = {"none", "sam", "asam", "looksam", "sam-subset"};
  if (std::find(kinds.begin(), kinds.end(), s_.kind) == kinds.end())
    fail("--sam", "unknown SAM variant '" + s_.kind + "' (none, sam, asam, looksam, sam-subset)");
  if (s_.kind != "none" && !(s_.rho > 0)) fail("--rho", "must be positive");
  if (s_.kind == "looksam" && s_.k < 1) fail("--looksam-k", "must be at least 1");
  std::vector<std::regex> patterns;
  if (s_.kind == "sam-subset") {
    if (s_.subset.empty()) fail("--sam-subset", "sam-subset needs at least one parameter-name pattern");
    for (const auto& p : s_.subset) {
      try {
        patterns.emplace_back(p);
      } catch (const std::regex_error& e) {
        fail("--sam-subset", "pattern '" + p + "' is not a valid regular expression");
      }
    }
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    tensors_.push_back(params_[i].second);
    bool sel = true;
    if (s_.kind == "sam-subset") {
      sel = false;
      for (const auto& re : patterns) sel = sel || std::regex_match(params_[i].first, re);
    }
    perturbed_.push_back(sel);
    if (sel) perturbed_idx_.push_back(i);
  }
  if (s_.kind == "sam-subset" && perturbed_idx_.empty())
    fail("--sam-subset", "no trainable parameter matches the patterns");
}

// Dropped rather than zeroed, as torch's zero_grad(set_to_none=True) does: backward then hands
// each parameter its new gradient instead of adding it to zeros (a fill and an add over the
// model's gradients a pass, 5% of a 10M bf16 step), and the old gradients are not alive at the
// start of backward, when the activations are.
void SamStepper::zero_grads() {
  for (auto& t : tensors_) t.mutable_grad() = torch::Tensor();
}

std::vector<torch::Tensor> SamStepper::grads_of(const std::vector<size_t>& idx) const {
  std::vector<torch::Tensor> g;
  for (size_t i : idx) {
    const auto& t = tensors_[i];
    g.push_back(t.grad().defined() ? t.grad() : torch::zeros_like(t));
  }
  return g;
}

StepStats SamStepper::step(const std::function<torch::Tensor()>& closure) {
  StepStats st;
  // Every reduction of gradients over the model, whole even when each process holds a share.
  auto total = [&](const torch::Tensor& partial) { return shard_.sum_across ? shard_.sum_across(partial) : partial; };
  auto sync = [&] {
    if (grad_sync_) grad_sync_();
  };
  const bool looksam_full = s_.kind == "looksam" && steps_ % s_.k == 0;
  const bool two_pass = s_.kind == "sam" || s_.kind == "asam" || s_.kind == "sam-subset" || looksam_full;
  zero_grads();
  torch::Tensor loss;
  {
    // sam-subset's first pass needs the gradient of the perturbed parameters only (the step uses
    // the second pass's): with the others out of the graph, autograd skips their weight-gradient
    // products and records nothing below the lowest perturbed layer.
    std::vector<torch::Tensor> unused;
    if (s_.kind == "sam-subset")
      for (size_t i = 0; i < tensors_.size(); ++i)
        if (!perturbed_[i]) unused.push_back(tensors_[i]);
    GradientsOff off(std::move(unused));
    loss = closure().detach().to(torch::kDouble);
  }
  sync();

  torch::Tensor perturbed_loss, e_norm;
  const torch::Device device = loss.device();
  auto sq_norm = [&](const std::vector<torch::Tensor>& ts) { return sum_of_squares(ts, device); };
  if (two_pass) {
    torch::NoGradGuard ng;
    std::vector<torch::Tensor> g = grads_of(perturbed_idx_);
    std::vector<torch::Tensor> g_saved;
    if (looksam_full) {
      looksam_gv_.clear();  // replaced below; freed first so the step holds one of the two
      g_saved = g;          // the second pass gets new gradient tensors: these stay as they are
    }
    // The second pass runs on w + e in buffers of its own that the parameters point to for its
    // duration (as `p.data = w_plus_e` would in Python); w itself is never written, so putting it
    // back is exact (subtracting e again would not restore w bit for bit) and costs no pass over
    // the weights. Against keeping a copy of w and perturbing in place that saves a copy of the
    // weights and a copy back: half of the perturbation's memory traffic, with the same one
    // model-sized buffer beyond AdamW.
    std::vector<torch::Tensor> weights, w_plus_e;
    for (size_t i : perturbed_idx_) weights.push_back(tensors_[i].detach());
    // e is never held for the whole model: its one copy would be a second model-sized buffer
    // beside w + e. The scale rho / ||.|| is a 0-dim float64 tensor (0 for a zero gradient),
    // multiplied in as a scalar would be.
    if (s_.kind == "asam") {
      // e = rho T^2 g / ||T g||, T = |w| + eta; each tensor's e is formed where its w + e goes.
      std::vector<torch::Tensor> tg_norms;
      for (size_t j = 0; j < g.size(); ++j) tg_norms.push_back(weights[j].abs().add_(s_.eta).mul_(g[j]).norm());
      const torch::Tensor scale = ratio_or_zero(torch::full_like(loss, s_.rho), total(sq_norm(tg_norms)).sqrt());
      std::vector<torch::Tensor> e_norms;
      for (size_t j = 0; j < g.size(); ++j) {
        torch::Tensor t = weights[j].abs().add_(s_.eta);
        t.mul_(t).mul_(g[j]).mul_(scale);
        e_norms.push_back(t.norm());
        w_plus_e.push_back(t.add_(weights[j]));
      }
      e_norm = total(sq_norm(e_norms)).sqrt();
    } else {
      // e = rho g / ||g||, so ||e|| = rho (0 for a zero gradient).
      const torch::Tensor g_norm = total(sq_norm(g)).sqrt();
      const torch::Tensor scale = ratio_or_zero(torch::full_like(loss, s_.rho), g_norm);
      for (size_t j = 0; j < g.size(); ++j) w_plus_e.push_back(torch::addcmul(weights[j], g[j], scale));
      e_norm = g_norm * scale;
    }
    for (size_t j = 0; j < w_plus_e.size(); ++j) tensors_[perturbed_idx_[j]].set_data(w_plus_e[j]);
    if (shard_.share_perturbed) shard_.share_perturbed();
    g.clear();  // with the parameters' references dropped too, the first pass's gradients are freed
    zero_grads();
    auto restore = [&] {
      for (size_t j = 0; j < weights.size(); ++j) tensors_[perturbed_idx_[j]].set_data(weights[j]);
    };
    try {
      {
        torch::AutoGradMode enable(true);
        perturbed_loss = closure().detach().to(torch::kDouble);
      }
      sync();
    } catch (...) {
      restore();  // a failed second pass must not leave the parameters at w + e
      throw;
    }
    restore();
    w_plus_e.clear();
    st.second_pass = true;
    if (looksam_full) {
      // g_v = g_s - (g_s . g / ||g||^2) g, written over the copy of g.
      std::vector<torch::Tensor> gs = grads_of(perturbed_idx_);
      const torch::Tensor proj = ratio_or_zero(total(dot(gs, g_saved)), total(sq_norm(g_saved)));
      for (size_t j = 0; j < gs.size(); ++j) g_saved[j].mul_(-proj).add_(gs[j]);
      looksam_gv_ = std::move(g_saved);
      looksam_gv_norm_ = total(sq_norm(looksam_gv_)).sqrt();
    }
  } else if (s_.kind == "looksam" && !looksam_gv_.empty()) {
    torch::NoGradGuard ng;
    std::vector<torch::Tensor> g = grads_of(perturbed_idx_);
    const torch::Tensor gn = total(sq_norm(g)).sqrt();
    if (!looksam_gv_norm_.defined()) looksam_gv_norm_ = total(sq_norm(looksam_gv_)).sqrt();
    // alpha * ||g|| / ||g_v||; a zero g_v adds nothing (scale 0 on a zero vector).
    const torch::Tensor scale = ratio_or_zero(s_.alpha * gn, looksam_gv_norm_);
    for (size_t j = 0; j < g.size(); ++j) {
      auto& t = tensors_[perturbed_idx_[j]];
      if (!t.grad().defined()) t.mutable_grad() = torch::zeros_like(t);
      t.grad().addcmul_(looksam_gv_[j], scale);
    }
  }
  const torch::Tensor grad_norm = global_grad_norm(tensors_, shard_.sum_across);
  st.lr = base_.param_groups().front().options().get_lr();
  step_with_scaled_grads(base_, max_grad_norm_ > 0 ? clip_scale(grad_norm, max_grad_norm_) : torch::Tensor());
  ++steps_;
  // The step's one wait for the device: the numbers it reports, read together.
  const double nan = std::nan("");
  std::vector<torch::Tensor> reported = {loss, grad_norm.to(torch::kDouble),
                                         e_norm.defined() ? e_norm : torch::zeros_like(loss),
                                         perturbed_loss.defined() ? perturbed_loss : torch::full_like(loss, nan)};
  const torch::Tensor host = torch::stack(reported).cpu();
  const double* v = host.data_ptr<double>();
  st.loss = v[0];
  st.grad_norm = v[1];
  st.e_norm = v[2];
  st.perturbed_loss = v[3];
  return st;
}

NamedTensors SamStepper::state() const {
  NamedTensors out;
  out.emplace_back("sam.steps", torch::tensor({steps_}, torch::kLong));
  for (size_t j = 0; j < looksam_gv_.size(); ++j)
    out.emplace_back("sam.looksam_gv." + params_[perturbed_idx_[j]].first, looksam_gv_[j].detach().cpu());
  return out;
}

void SamStepper::load_state(const NamedTensors& state, const std::string& where) {
  looksam_gv_.clear();
  looksam_gv_norm_ = torch::Tensor();  // taken at the next step, where every process takes part
  std::map<std::string, torch::Tensor> m(state.begin(), state.end());
  auto it = m.find("sam.steps");
  if (it == m.end()) fail(where, "missing SAM state 'sam.steps'");
  steps_ = it->second.item<int64_t>();
  for (size_t i : perturbed_idx_) {
    auto g = m.find("sam.looksam_gv." + params_[i].first);
    if (g == m.end()) {
      if (!looksam_gv_.empty()) fail(where, "incomplete LookSAM state for '" + params_[i].first + "'");
      continue;
    }
    looksam_gv_.push_back(g->second.to(tensors_[i].options()));
  }
}

}  // namespace flatune
