#include "flatune/model/loss.h"

#include "flatune/model/cross_entropy_rows.h"

#include <ATen/autocast_mode.h>

#include <algorithm>

namespace flatune {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The float type the softmax runs in: float64 for float64 weights, float32 otherwise (as
// causal_lm_loss_sum upcasts bf16/fp16 logits).
torch::ScalarType softmax_type(const torch::Tensor& h) {
  return h.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
}

int64_t rows_per_chunk(const FusedLossOptions& o, int64_t vocab) {
  return std::max<int64_t>(1, std::min(o.chunk_rows, (int64_t{1} << 22) / std::max<int64_t>(1, vocab)));
}

// Rows whose logit gradients are gathered before one weight-gradient product: about 32 MiB of
// them. A product per logits chunk would read and write the whole [V, H] sum once a chunk (under
// autocast through a bf16 -> fp32 add_ that costs as much as the product itself, measured at
// 0.34 against 0.14 ms for a [2048, 512] block) and give the products a short inner dimension.
// At most half of the N rows: one group of them all would be the whole [N, V] logits the chunks
// are there to avoid (at the 1M bench shape, 2,040 x 2,000 fp32: 16 MiB, a fifth of its
// activations, on top of them at the forward's end).
int64_t gradient_rows(const FusedLossOptions& o, int64_t rows, int64_t vocab, torch::ScalarType product_type) {
  if (o.grad_w_rows > 0) return o.grad_w_rows;
  const int64_t row_bytes = std::max<int64_t>(1, vocab) * static_cast<int64_t>(c10::elementSize(product_type));
  return std::max<int64_t>(1, std::min((int64_t{32} << 20) / row_bytes, (rows + 1) / 2));
}

// gw (undefined the first time) = or += gᵀ h over a group of rows, in w's float type. Products in
// a reduced type run in blocks of vocabulary rows, so the cast transient is a small block, not a
// second [V, H] matrix.
void add_weight_gradient(torch::Tensor& gw, const torch::Tensor& g, const torch::Tensor& hg, torch::ScalarType acc_type,
                         const FusedLossOptions& o) {
  const int64_t V = g.size(1), H = hg.size(1);
  if (g.scalar_type() == acc_type) {
    if (gw.defined()) gw.addmm_(g.t(), hg);
    else gw = torch::mm(g.t(), hg);
    return;
  }
  // Reduced precision products summed over groups in fp32 (an fp32 addmm_ would run at half the
  // bf16 rate).
  const bool first = !gw.defined();
  if (first) gw = torch::empty({V, H}, hg.options().dtype(acc_type));
  const int64_t block = o.grad_w_block_rows > 0 ? o.grad_w_block_rows
                                                : std::max<int64_t>(1, (int64_t{1} << 20) / std::max<int64_t>(1, H));
  for (int64_t v0 = 0; v0 < V; v0 += block) {
    const int64_t k = std::min(block, V - v0);
    torch::Tensor part = torch::mm(g.narrow(1, v0, k).t(), hg);
    if (first) gw.narrow(0, v0, k).copy_(part);
    else gw.narrow(0, v0, k).add_(part);
  }
}

// The ordinary-op form of cross_entropy_rows (CUDA): the rows' losses from a chunk's logits in
// the products' type and, when g is defined, the gradient softmax(z) − onehot(y) written to it.
void cross_entropy_chunk_aten(const torch::Tensor& products, const torch::Tensor& labels, torch::ScalarType st,
                              torch::Tensor& rows, torch::Tensor& g) {
  torch::Tensor logits = products.to(st);
  const torch::Tensor y = labels.unsqueeze(1);
  torch::Tensor picked = logits.gather(1, y).squeeze(1);
  // amax: the values without the indices max(dim) also finds.
  torch::Tensor top = logits.amax(1, /*keepdim=*/true);
  logits.sub_(top).exp_();  // exp(z - max), in place
  torch::Tensor total = logits.sum(1, /*keepdim=*/true);
  rows.copy_((total.log() + top).squeeze(1) - picked);
  if (!g.defined()) return;
  logits.div_(total);
  logits.scatter_add_(1, y, torch::full({logits.size(0), 1}, -1.0, logits.options()));
  g.copy_(logits);
}

// One pass over the rows in chunks. Fills rows_out [N] with the per-row losses; when grad_h /
// grad_w are given, writes the gradient of the summed loss into them (*grad_w in w's float type,
// fp32 for reduced precision weights).
void chunked_pass(const torch::Tensor& h, const torch::Tensor& w, const torch::Tensor& labels,
                  const FusedLossOptions& o, torch::Tensor& rows_out, torch::Tensor* grad_h, torch::Tensor* grad_w) {
  const int64_t N = h.size(0), V = w.size(0);
  const auto st = softmax_type(h);
  const bool autocast = at::autocast::is_autocast_enabled(h.device().type()) && st == torch::kFloat;
  // Under autocast the weight is cast once for the whole pass: the products would otherwise cast it
  // again in every chunk (and autocast caches only the plain leaf, not its transpose).
  const auto product_type = autocast ? at::autocast::get_autocast_dtype(h.device().type()) : h.scalar_type();
  const bool rows_kernel = h.device().is_cpu() && (product_type == torch::kFloat || product_type == torch::kDouble ||
                                                   product_type == torch::kBFloat16);
  int64_t step = rows_per_chunk(o, V);
  // Without the rows kernel, under autocast a chunk's gradient is briefly held twice, in fp32 and
  // cast: 1.5x the bytes of its logits, so two thirds of the rows keep the working set. (The
  // kernel keeps the chunk in the products' type.)
  if (autocast && !rows_kernel) step = std::max<int64_t>(1, step * 2 / 3);
  const torch::Tensor wc = w.to(product_type);
  const torch::Tensor wt = wc.t();
  const bool need_grad = grad_h || grad_w;
  // The chunks' logit gradients in the products' type, a group of rows at a time for the weight's.
  // A whole number of chunks, so no chunk is split across two groups.
  const int64_t group = grad_w ? std::max<int64_t>(1, gradient_rows(o, N, V, product_type) / step) * step : step;
  torch::Tensor gathered, logits_scratch;
  if (need_grad) gathered = torch::empty({std::min(group, N), V}, h.options().dtype(product_type));
  else if (rows_kernel) logits_scratch = torch::empty({std::min(step, N), V}, h.options().dtype(product_type));
  for (int64_t g0 = 0; g0 < N; g0 += group) {
    const int64_t m = std::min(group, N - g0);
    // The group's rows cast once, for its chunks' products and for the weight's gradient.
    const torch::Tensor hg = h.narrow(0, g0, m).to(product_type);
    for (int64_t r0 = g0; r0 < g0 + m; r0 += step) {
      const int64_t n = std::min(step, g0 + m - r0);
      const torch::Tensor hc = hg.narrow(0, r0 - g0, n);
      torch::Tensor g = need_grad ? gathered.narrow(0, r0 - g0, n) : torch::Tensor();
      torch::Tensor rows = rows_out.narrow(0, r0, n);
      if (rows_kernel) {
        // The products' logits, turned into their gradient where they lie.
        torch::Tensor z = need_grad ? g : logits_scratch.narrow(0, 0, n);
        torch::mm_out(z, hc, wt);
        cross_entropy_rows(z, labels.narrow(0, r0, n), rows, need_grad);
      } else {
        cross_entropy_chunk_aten(torch::mm(hc, wt), labels.narrow(0, r0, n), st, rows, g);
      }
      if (grad_h) grad_h->narrow(0, r0, n).copy_(torch::mm(g, wc));
    }
    if (grad_w) add_weight_gradient(*grad_w, gathered.narrow(0, 0, m), hg, softmax_type(w), o);
  }
}

struct LinearCrossEntropy : torch::autograd::Function<LinearCrossEntropy> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& h, const torch::Tensor& w,
                               const torch::Tensor& labels, FusedLossOptions o, torch::Tensor* rows) {
    const bool need_h = h.requires_grad(), need_w = w.requires_grad();
    torch::Tensor rows_out = torch::empty({h.size(0)}, h.options().dtype(softmax_type(h)));
    torch::Tensor gh = need_h ? torch::empty_like(h) : torch::Tensor();
    // Reduced precision weights: the chunks' sum is kept in fp32 and cast once at the end.
    torch::Tensor gw;
    chunked_pass(h, w, labels, o, rows_out, need_h ? &gh : nullptr, need_w ? &gw : nullptr);
    if (need_w) gw = gw.to(w.scalar_type());
    ctx->saved_data["grad_h"] = gh;
    ctx->saved_data["grad_w"] = gw;
    if (rows) *rows = rows_out;
    return rows_out.sum().to(h.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    // The gradients are scaled in place and handed over rather than copied: a copy of the head's
    // weight gradient would come at the start of backward, when every activation is still alive.
    // So they can be used once; a second backward through the same graph is refused.
    TORCH_CHECK(ctx->saved_data.count("grad_h") == 1,
                "linear_cross_entropy_sum: backward a second time (retain_graph) is not supported");
    const torch::Tensor& go = grad_out[0];
    torch::Tensor gh = ctx->saved_data["grad_h"].toTensor(), gw = ctx->saved_data["grad_w"].toTensor();
    ctx->saved_data.clear();
    if (gh.defined()) gh.mul_(go.to(gh.scalar_type()));
    if (gw.defined()) gw.mul_(go.to(gw.scalar_type()));
    return {gh, gw, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor linear_cross_entropy_sum(const torch::Tensor& h, const torch::Tensor& weight, const torch::Tensor& labels,
                                       torch::Tensor* rows, const FusedLossOptions& o) {
  TORCH_CHECK(h.dim() == 2 && weight.dim() == 2 && h.size(1) == weight.size(1),
              "linear_cross_entropy_sum: h [N, H], weight [V, H]");
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == h.size(0), "linear_cross_entropy_sum: labels [N]");
  const bool grad = torch::GradMode::is_enabled() && (h.requires_grad() || weight.requires_grad());
  if (grad) return LinearCrossEntropy::apply(h, weight, labels, o, rows);
  torch::Tensor rows_out = torch::empty({h.size(0)}, h.options().dtype(softmax_type(h)));
  chunked_pass(h, weight, labels, o, rows_out, nullptr, nullptr);
  if (rows) *rows = rows_out;
  return rows_out.sum();
}

std::pair<torch::Tensor, int64_t> fused_causal_lm_loss_sum(LlamaForCausalLM& model, const ForwardInput& in,
                                                           const torch::Tensor& labels, torch::Tensor* per_token,
                                                           const FusedLossOptions& o) {
  torch::Tensor hidden = model->hidden_states(in);
  const int64_t B = hidden.size(0), T = hidden.size(1), H = hidden.size(2);
  // Which rows count is found where the labels are (the CPU, as collate makes them), so that a
  // model on a GPU does not wait for nonzero()'s data-dependent size; only the indices travel.
  torch::Tensor shifted = labels.narrow(1, 1, T - 1).reshape({-1});
  torch::Tensor counted = (shifted != -100).nonzero().squeeze(1);
  const int64_t count = counted.size(0);
  shifted = shifted.to(hidden.device(), /*non_blocking=*/true);
  counted = counted.to(hidden.device(), /*non_blocking=*/true);
  torch::Tensor rows;
  torch::Tensor sum;
  if (count == 0) {
    sum = (hidden.sum() * 0).to(softmax_type(hidden));  // 0 with a graph, as causal_lm_loss_sum
    rows = torch::zeros({0}, hidden.options().dtype(softmax_type(hidden)));
  } else {
    torch::Tensor h = hidden.narrow(1, 0, T - 1).reshape({-1, H}).index_select(0, counted);
    sum = linear_cross_entropy_sum(h, model->lm_head_weight(), shifted.index_select(0, counted),
                                   per_token ? &rows : nullptr, o);
  }
  if (per_token) {
    torch::Tensor all = torch::zeros({B * (T - 1)}, hidden.options().dtype(softmax_type(hidden)));
    if (count > 0) all.index_copy_(0, counted, rows.detach());
    *per_token = all.view({B, T - 1});
  }
  return {sum, count};
}

}  // namespace flatune
