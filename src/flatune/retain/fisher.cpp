#include "flatune/retain/fisher.h"

#include "flatune/core/error.h"
#include "flatune/core/progress.h"

namespace flatune {

NamedTensors compute_fisher(LlamaForCausalLM& model, const std::vector<Example>& data, const FisherOptions& o) {
  if (o.kind != "empirical" && o.kind != "true") fail("--kind", "Fisher kind must be empirical or true");
  if (data.empty()) fail("--data", "no examples to estimate the Fisher information from");
  const int64_t n = std::min<int64_t>(o.examples, static_cast<int64_t>(data.size()));
  std::vector<std::pair<std::string, torch::Tensor>> params;
  for (auto& item : model->named_parameters(true)) params.emplace_back(item.key(), item.value());
  std::vector<torch::Tensor> acc;
  std::vector<bool> grad_was;
  for (auto& [name, p] : params) {
    acc.push_back(torch::zeros_like(p, torch::kDouble));
    grad_was.push_back(p.requires_grad());
    p.set_requires_grad(true);
  }
  auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  bool was_training = model->is_training();
  model->eval();
  Progress progress("fisher", n, "ex");
  for (int64_t i = 0; i < n; ++i) {
    const Example& ex = data[i];
    auto ids = torch::tensor(ex.ids, torch::kLong).unsqueeze(0);
    auto labels = torch::tensor(ex.labels, torch::kLong).unsqueeze(0);
    ForwardInput in;
    in.input_ids = ids;
    auto logits = model->forward(in);
    if (o.kind == "true") {
      // Sample the target of every labelled position from the model's prediction at the
      // position before it.
      torch::NoGradGuard ng;
      // Sampled on the CPU with the seeded CPU generator: the same targets on every device.
      auto probs = logits[0].softmax(-1).to(torch::kCPU, torch::kFloat);
      auto sampled = torch::multinomial(probs, 1, true, gen).squeeze(-1);  // sampled[t] predicts t+1
      auto shifted = torch::full_like(labels, -100);
      shifted[0].narrow(0, 1, labels.size(1) - 1).copy_(sampled.narrow(0, 0, labels.size(1) - 1));
      labels = torch::where(labels != -100, shifted, labels);
    }
    auto [nll, count] = causal_lm_loss_sum(logits, labels);
    for (auto& [name, p] : params)
      if (p.grad().defined()) p.grad().zero_();
    nll.backward();  // d(-log p)^2 = d(log p)^2
    torch::NoGradGuard ng;
    for (size_t k = 0; k < params.size(); ++k)
      if (params[k].second.grad().defined()) acc[k].add_(params[k].second.grad().to(torch::kDouble).pow(2));
    progress.update(i + 1);
  }
  progress.finish();
  NamedTensors out;
  for (size_t k = 0; k < params.size(); ++k) {
    params[k].second.set_requires_grad(grad_was[k]);
    params[k].second.mutable_grad() = torch::Tensor();
    if (params[k].first.find(".lora_") != std::string::npos) continue;
    out.emplace_back(params[k].first, (acc[k] / static_cast<double>(n)).to(torch::kFloat));
  }
  model->train(was_training);
  return out;
}

}  // namespace flatune
