#include "flatune/optim/optimizer.h"

#include <cmath>
#include <map>
#include <tuple>

#include "flatune/core/error.h"

namespace flatune {

bool exempt_from_decay(const std::string& name, const torch::Tensor& p) {
  return p.dim() <= 1 || name.find("norm") != std::string::npos || name.find("embed_tokens") != std::string::npos ||
         (name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0);
}

namespace {

// torch::optim::AdamW whose update runs as one multi-tensor kernel per group (at::_fused_adamw_,
// the kernel behind torch.optim.AdamW(fused=True)): one pass over each parameter, its gradient
// and its moments, where AdamW::step makes six passes and two temporaries a tensor (a 10M model's
// update: 6 against 18-28 ms on 2 cores). The state is AdamW's own, so saved optimizer files
// are unchanged.
class FusedAdamW final : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;

  torch::Tensor step(LossClosure closure = nullptr) override {
    torch::Tensor loss;
    if (closure) {
      at::AutoGradMode enable_grad(true);
      loss = closure();
    }
    update(torch::Tensor());
    return loss;
  }

  // The update with every gradient multiplied by grad_scale first (undefined: 1).
  void update(const torch::Tensor& grad_scale) {
    torch::NoGradGuard no_grad;
    for (auto& group : param_groups()) {
      const auto& o = static_cast<const torch::optim::AdamWOptions&>(group.options());
      TORCH_CHECK(!o.amsgrad(), "FusedAdamW: amsgrad is not supported");
      // The kernel takes tensors of one dtype and device a call (a group may mix them: LoRA
      // adapters beside a reduced-precision model).
      struct Lists {
        std::vector<torch::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
      };
      std::map<std::tuple<c10::DeviceType, c10::DeviceIndex, c10::ScalarType>, Lists> calls;
      for (auto& p : group.params()) {
        if (!p.grad().defined()) continue;
        auto& slot = state_[p.unsafeGetTensorImpl()];
        if (!slot) {
          auto fresh = std::make_unique<torch::optim::AdamWParamState>();
          fresh->step(0);
          fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
          fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
          slot = std::move(fresh);
        }
        auto& st = static_cast<torch::optim::AdamWParamState&>(*slot);
        st.step(st.step() + 1);
        Lists& l = calls[{p.device().type(), p.device().index(), p.scalar_type()}];
        l.params.push_back(p);
        l.grads.push_back(p.grad());
        l.exp_avgs.push_back(st.exp_avg());
        l.exp_avg_sqs.push_back(st.exp_avg_sq());
        // The step the bias corrections use, after this update (float32, as torch keeps it).
        l.steps.push_back(torch::full({}, static_cast<double>(st.step()), p.options().dtype(torch::kFloat)));
      }
      const auto [beta1, beta2] = o.betas();
      for (auto& [key, l] : calls) {
        // The kernel divides the gradients by its grad_scale (AMP's loss scale) and keeps them so.
        c10::optional<torch::Tensor> divisor;
        if (grad_scale.defined())
          divisor = (1.0 / grad_scale).to(torch::TensorOptions().dtype(torch::kFloat).device(l.params[0].device()));
        at::_fused_adamw_(l.params, l.grads, l.exp_avgs, l.exp_avg_sqs, {}, l.steps, o.lr(), beta1, beta2,
                          o.weight_decay(), o.eps(), /*amsgrad=*/false, /*maximize=*/false, divisor);
      }
    }
  }
};

}  // namespace

std::unique_ptr<torch::optim::Optimizer> make_adamw(const NamedParams& params, const AdamWSettings& s) {
  std::vector<torch::Tensor> decayed, exempt;
  for (const auto& [name, p] : params) {
    if (!s.decay_all && exempt_from_decay(name, p)) exempt.push_back(p);
    else decayed.push_back(p);
  }
  auto opts = [&](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(s.lr).betas({s.beta1, s.beta2}).eps(s.eps).weight_decay(wd));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  if (!decayed.empty()) groups.emplace_back(decayed, opts(s.weight_decay));
  if (!exempt.empty()) groups.emplace_back(exempt, opts(0.0));
  if (groups.empty()) fail("optimizer", "no trainable parameters");
  return std::make_unique<FusedAdamW>(groups, torch::optim::AdamWOptions(s.lr));
}

void set_learning_rate(torch::optim::Optimizer& opt, double lr) {
  for (auto& g : opt.param_groups()) g.options().set_lr(lr);
}

void save_optimizer_state(const torch::optim::Optimizer& opt, const std::string& path) {
  torch::serialize::OutputArchive archive;
  opt.save(archive);
  archive.save_to(path);
}

void load_optimizer_state(torch::optim::Optimizer& opt, const std::string& path) {
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
    opt.load(archive);
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    fail(path, "cannot restore the optimizer state: " + msg.substr(0, msg.find('\n')));
  }
}

double learning_rate_at(const Schedule& s, double base_lr, int64_t step) {
  if (s.kind == "step") {
    // Whole epochs, then whole decay periods: StepLR floors both.
    const int64_t epoch = step / std::max<int64_t>(1, s.steps_per_epoch);
    const int64_t decays = epoch / std::max<int64_t>(1, s.decay_every_epochs);
    return base_lr * std::pow(s.gamma, static_cast<double>(decays));
  }
  if (step < s.warmup_steps)
    return base_lr * static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, s.warmup_steps));
  if (s.kind == "constant") return base_lr;
  const double floor = base_lr * s.min_lr_ratio;
  double progress = static_cast<double>(step - s.warmup_steps) /
                    static_cast<double>(std::max<int64_t>(1, s.total_steps - s.warmup_steps));
  progress = std::min(1.0, std::max(0.0, progress));
  if (s.kind == "linear") return floor + (base_lr - floor) * (1.0 - progress);
  if (s.kind == "cosine") return floor + (base_lr - floor) * 0.5 * (1.0 + std::cos(M_PI * progress));
  fail("--schedule", "unknown schedule '" + s.kind + "' (constant, linear, cosine, step)");
}

torch::Tensor sum_of_squares(const std::vector<torch::Tensor>& tensors, const torch::Device& device) {
  // Each tensor's sum in its own dtype, as torch.nn.utils.clip_grad_norm_ takes their norms (no
  // float64 copy of the model), then summed in float64. A float32 or float64 tensor on the CPU
  // is its dot product with itself: BLAS reads it at about 2.8x the speed of the norm kernel
  // that _foreach_norm runs there one tensor at a time (54M float32 values, 2 cores: 5.6 against
  // 15.6 ms), which a training step does once for clipping and SAM once more for its
  // perturbation. The rest (CUDA: one multi-tensor kernel; bf16) through _foreach_norm.
  std::vector<torch::Tensor> parts, others;
  for (const auto& t : tensors) {
    const bool blas = t.device().is_cpu() && (t.scalar_type() == torch::kFloat || t.scalar_type() == torch::kDouble);
    if (blas) {
      const torch::Tensor flat = t.reshape({-1});
      parts.push_back(at::dot(flat, flat).to(torch::kDouble));
    } else {
      others.push_back(t);
    }
  }
  if (!others.empty())  // _foreach_norm refuses an empty list
    for (const auto& n : at::_foreach_norm(others, 2)) parts.push_back(n.to(torch::kDouble).square());
  if (parts.empty()) return torch::zeros({}, torch::TensorOptions().dtype(torch::kDouble).device(device));
  return torch::stack(parts).sum();
}

torch::Tensor global_grad_norm(const std::vector<torch::Tensor>& params, const SumAcross& sum_across) {
  std::vector<torch::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad().detach());
  const torch::Device device = params.empty() ? torch::Device(torch::kCPU) : params.front().device();
  const torch::Tensor local = sum_of_squares(grads, device);
  return sum_across ? sum_across(local).sqrt() : local.sqrt();
}

torch::Tensor clip_scale(const torch::Tensor& norm, double max_norm) {
  torch::NoGradGuard ng;
  const torch::Tensor clip = torch::isfinite(norm) & (norm > max_norm);
  return torch::where(clip, max_norm / (norm + 1e-6), torch::ones_like(norm));
}

torch::Tensor clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm, const SumAcross& sum_across) {
  torch::Tensor norm = global_grad_norm(params, sum_across);
  if (max_norm > 0) {
    torch::NoGradGuard ng;
    const torch::Tensor scale = clip_scale(norm, max_norm);
    for (const auto& p : params)
      if (p.grad().defined()) p.grad().mul_(scale);
  }
  return norm;
}

void step_with_scaled_grads(torch::optim::Optimizer& opt, const torch::Tensor& grad_scale) {
  // The host reads the scale only where that costs no wait for a device.
  const bool one = !grad_scale.defined() || (grad_scale.device().is_cpu() && grad_scale.item<double>() == 1.0);
  if (auto* fused = dynamic_cast<FusedAdamW*>(&opt)) {
    fused->update(one ? torch::Tensor() : grad_scale);
    return;
  }
  if (!one) {
    torch::NoGradGuard ng;
    for (auto& group : opt.param_groups())
      for (auto& p : group.params())
        if (p.grad().defined()) p.grad().mul_(grad_scale);
  }
  opt.step();
}

}  // namespace flatune
