#include "flatune/retain/penalty.h"

#include "flatune/core/error.h"
#include "flatune/io/safetensors.h"

namespace flatune {

RetainPenalty make_retain_penalty(LlamaForCausalLM& model, const std::string& fisher_path, double ewc_lambda,
                                  double l2_lambda, bool on_adapters) {
  RetainPenalty p;
  p.ewc_lambda = ewc_lambda;
  p.l2_lambda = l2_lambda;
  p.on_adapters = on_adapters;
  if (ewc_lambda < 0 || l2_lambda < 0) fail("--ewc-lambda", "penalty strengths must not be negative");
  if (ewc_lambda > 0 && fisher_path.empty()) fail("--ewc", "--ewc-lambda needs a Fisher file (flatune fisher)");
  if (ewc_lambda == 0 && !fisher_path.empty())
    fail("--ewc-lambda", "a Fisher file without a positive --ewc-lambda would do nothing");
  if (ewc_lambda == 0 && l2_lambda == 0) return p;
  std::map<std::string, torch::Tensor> fisher;
  if (ewc_lambda > 0)
    for (auto& [name, t] : read_safetensors(fisher_path)) fisher[name] = t;
  for (auto& item : model->named_parameters(true)) {
    const std::string& name = item.key();
    const torch::Tensor& t = item.value();
    RetainPenalty::Term term;
    term.name = name;
    term.param = t;
    term.base = t.detach().clone();
    if (ewc_lambda > 0) {
      auto it = fisher.find(name);
      if (it == fisher.end())
        fail(fisher_path, "no Fisher tensor for '" + name + "' (a Fisher file from another architecture?)");
      if (!it->second.sizes().equals(t.sizes()))
        fail(fisher_path, "Fisher tensor '" + name + "' has the wrong shape for this model");
      term.fisher = it->second.to(t.options());
      fisher.erase(it);
    }
    p.terms.push_back(std::move(term));
  }
  if (ewc_lambda > 0 && !fisher.empty())
    fail(fisher_path, "Fisher tensor '" + fisher.begin()->first + "' matches no model weight (another architecture?)");
  return p;
}

void bind_lora_terms(RetainPenalty& p, LlamaForCausalLM& model) {
  if (p.terms.empty() || !model->has_lora()) return;
  if (p.on_adapters && p.ewc_lambda > 0)
    fail("--ewc", "EWC on adapters is undefined (no Fisher for them); drop --penalty-on-adapters");
  std::map<std::string, RetainPenalty::Term> by_name;
  for (auto& t : p.terms) by_name[t.name] = t;
  std::vector<RetainPenalty::Term> terms;
  for (const auto& m : model->named_modules()) {
    auto* proj = dynamic_cast<ProjectionImpl*>(m.value().get());
    if (!proj || !proj->has_lora()) continue;
    if (p.on_adapters) {
      for (const char* ab : {"lora_A", "lora_B"}) {
        RetainPenalty::Term t;
        t.name = m.key() + "." + ab + ".weight";
        t.param = std::string(ab) == "lora_A" ? proj->lora_A : proj->lora_B;
        t.base = t.param.detach().clone();
        terms.push_back(t);
      }
    } else {
      RetainPenalty::Term t = by_name.at(m.key() + ".weight");
      t.param = torch::Tensor();
      t.projection = proj;
      terms.push_back(t);
    }
  }
  p.terms = std::move(terms);
}

torch::Tensor RetainPenalty::value(LlamaForCausalLM&) const {
  torch::Tensor total;
  for (const auto& t : terms) {
    torch::Tensor diff;
    // Not read off requires_grad: sam-subset's first pass switches it off for a while, and the
    // value must not change with that.
    if (t.projection) diff = torch::matmul(t.projection->lora_B, t.projection->lora_A) * t.projection->lora_scale;
    else diff = t.param - t.base;
    torch::Tensor sq = diff.pow(2);
    torch::Tensor term;
    if (l2_lambda > 0) term = 0.5 * l2_lambda * sq.sum();
    if (ewc_lambda > 0 && t.fisher.defined()) {
      torch::Tensor e = 0.5 * ewc_lambda * (t.fisher * sq).sum();
      term = term.defined() ? term + e : e;
    }
    if (term.defined()) total = total.defined() ? total + term : term;
  }
  return total.defined() ? total : torch::zeros({});
}

}  // namespace flatune
