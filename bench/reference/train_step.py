#!/usr/bin/env python3
"""PyTorch + transformers reference of flatune's training step (issue 11, item 1).

The model is transformers' own: AutoModelForCausalLM.from_pretrained(folder, attn_implementation=
--attn, dtype=float32) for --check (LlamaForCausalLM, or Qwen2ForCausalLM for a qwen2 config), and
AutoModelForCausalLM.from_config(LlamaConfig(shape)) for --bench; --attn eager or sdpa
(transformers' default). The loss is the model's own, model(input_ids, labels=labels).loss:
logits upcast to float32, logits[:, :-1] against labels[:, 1:], -100 ignored, the mean over the
counted label tokens, as flatune's (its sum over the step's label tokens divided by their count).

The step is flatune's (src/flatune/optim/), written here in Python:
  - AdamW: torch.optim.AdamW, betas (0.9, 0.999), eps 1e-8, weight decay --weight-decay (flatune's
    default 0) in two groups: none on norms, biases, embeddings and any tensor of dim <= 1 (a tied
    lm_head is the embedding, listed once); the learning rate of each step from --schedule
    (constant, linear or cosine, --warmup-steps, --min-lr-ratio, over --steps steps) as
    flatune's learning_rate_at;
  - gradient clipping as flatune's clip_grad_norm: the global L2 norm of the gradients in float64
    (grad_norm, reported before clipping), and only when it exceeds --max-grad-norm every gradient
    times max_norm / (norm + 1e-6), as torch.nn.utils.clip_grad_norm_ scales;
  - SAM as flatune's SamStepper (sam.cpp), two passes:
      sam:  e = rho * g / ||g||;               asam: e = rho * T^2 g / ||T g||, T = |w| + eta;
    norms summed in float64, scale 0 when the norm is 0; second forward/backward at w + e, w
    restored from an exact copy, the base step with the second gradient (clipped).

Modes
  --check  load a Hugging Face folder and a fixed batch (JSON {"input_ids": [[...]], "labels":
           [[...]]} or a testdata vectors.safetensors), run --steps optimizer steps and print one
           JSON line per step: loss, grad_norm and, for SAM, perturbed_loss and e_norm (the fields
           flatune's metrics.jsonl has). With a testdata vectors.safetensors, first the max
           |logits - reference logits|. bench/reference/check.sh runs it against `flatune train`
           on the same batch, for eager and sdpa attention.
  --bench  time --steps steps (after one warm-up) of AdamW, SAM and ASAM on a fresh model of a
           given shape and print tokens/s as `flatune bench train` does (--json FILE too); --bf16:
           the forward passes under torch.autocast("cpu", bfloat16), backward outside it.
Allocator: run as users run it, the process has glibc's malloc; bench/run.sh also runs it with
LD_PRELOAD of the tcmalloc flatune links, and the peak-RSS reset below then uses tcmalloc's
MallocExtension_ReleaseFreeMemory instead of malloc_trim.
Run it with the project venv's python: .venv/bin/python (torch 2.13, transformers 5.24; made by
scripts/setup.sh). Offline: it never downloads anything.
"""
import argparse
import json
import math
import os
import sys
import time

for _k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_k, "1")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "peers"))
from bench_args import add_shape_args  # noqa: E402

ATTN = ("eager", "sdpa")

# ---------------------------------------------------------------- the model


def load_model(folder, attn):
    """transformers' own model class for the folder's config, fp32, every tensor from the file."""
    model, info = AutoModelForCausalLM.from_pretrained(
        folder, attn_implementation=attn, dtype=torch.float32, output_loading_info=True)
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if bad:  # transformers would otherwise train a randomly initialised tensor and say so only in a warning
        raise SystemExit(f"{folder}: the checkpoint does not fit {type(model).__name__}: {bad}")
    assert model.config._attn_implementation == attn, model.config._attn_implementation
    model.config.use_cache = False
    return model.train()


def fresh_model(a):
    c = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.ffn, num_hidden_layers=a.layers,
                    num_attention_heads=a.heads, num_key_value_heads=a.heads, max_position_embeddings=a.seq,
                    use_cache=False, tie_word_embeddings=False)
    torch.manual_seed(0)  # transformers' initialisation: normal(0, initializer_range), norms 1
    model = AutoModelForCausalLM.from_config(c, attn_implementation=a.attn, dtype=torch.float32)
    return model.train()


def causal_lm_loss(model, ids, labels):
    """transformers' loss: mean cross-entropy over the label tokens (labels[:, 1:] != -100)."""
    return model(input_ids=ids, labels=labels, use_cache=False).loss


# ---------------------------------------------------------------- the step (flatune's)


def exempt_from_decay(name, p):  # flatune's exempt_from_decay
    return p.dim() <= 1 or "norm" in name or "embed_tokens" in name or name.endswith(".bias")


def make_adamw(model, lr, wd, betas=(0.9, 0.999), eps=1e-8):
    decay, exempt = [], []
    for name, p in model.named_parameters():  # a tied lm_head appears once, as the embedding
        if p.requires_grad:
            (exempt if exempt_from_decay(name, p) else decay).append(p)
    groups = [g for g in ({"params": decay, "weight_decay": wd}, {"params": exempt, "weight_decay": 0.0}) if g["params"]]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def learning_rate_at(kind, base_lr, step, warmup, total, min_lr_ratio):
    """flatune's learning_rate_at (0-based step) for constant, linear and cosine."""
    if step < warmup:
        return base_lr * step / max(1, warmup)
    if kind == "constant":
        return base_lr
    floor = base_lr * min_lr_ratio
    progress = min(1.0, max(0.0, (step - warmup) / max(1, total - warmup)))
    if kind == "linear":
        return floor + (base_lr - floor) * (1.0 - progress)
    return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def sq_norm(ts):
    """Sum of squares in float64 over all tensors, one host synchronisation (flatune's sq_norm)."""
    if not ts:
        return 0.0
    return torch.stack([t.double().pow(2).sum() for t in ts]).sum().item()


def clip_grad_norm(params, max_norm):
    """flatune's clip_grad_norm: the float64 global norm before clipping; scale only above max_norm."""
    gs = [p.grad for p in params if p.grad is not None]
    if not gs:
        return 0.0
    norm = torch.stack([g.detach().double().norm() for g in gs]).norm().item()
    if max_norm > 0 and math.isfinite(norm) and norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        with torch.no_grad():
            for g in gs:
                g.mul_(scale)
    return norm


class Stepper:
    """One optimizer step: AdamW alone or wrapped by SAM / ASAM (two passes), as flatune's SamStepper."""

    def __init__(self, params, opt, kind="none", rho=0.05, eta=0.01, max_grad_norm=1.0):
        self.params, self.opt, self.kind = list(params), opt, kind
        self.rho, self.eta, self.max_grad_norm = rho, eta, max_grad_norm

    def zero_grads(self):
        for p in self.params:
            if p.grad is not None:
                p.grad.zero_()

    def step(self, closure):
        st = {}
        self.zero_grads()
        st["loss"] = closure()
        if self.kind in ("sam", "asam"):
            with torch.no_grad():
                ps = self.params
                gs = [p.grad if p.grad is not None else torch.zeros_like(p) for p in ps]
                if self.kind == "asam":
                    ts = [p.detach().abs() + self.eta for p in ps]
                    n = math.sqrt(sq_norm([t * g for t, g in zip(ts, gs)]))
                    scale = self.rho / n if n > 0 else 0.0
                    es = [t * t * g * scale for t, g in zip(ts, gs)]
                else:
                    n = math.sqrt(sq_norm(gs))
                    scale = self.rho / n if n > 0 else 0.0
                    es = [g * scale for g in gs]
                st["e_norm"] = math.sqrt(sq_norm(es))
                weights = [p.detach() for p in ps]
                saved = [w.clone() for w in weights]  # exact copies: w + e - e is not w bit for bit
                torch._foreach_add_(weights, es)
            self.zero_grads()
            try:
                st["perturbed_loss"] = closure()
            finally:
                with torch.no_grad():
                    for w, s in zip(weights, saved):
                        w.copy_(s)
        st["grad_norm"] = clip_grad_norm(self.params, self.max_grad_norm)
        self.opt.step()
        return st


# ---------------------------------------------------------------- modes


def load_batch(path):
    if path.endswith(".safetensors"):
        t = load_file(path)
        ids = t["input_ids"].long()
        labels = t["labels"].long() if "labels" in t else ids.clone()
    else:
        with open(path) as f:
            d = json.load(f)
        if isinstance(d, list):
            d = {"input_ids": d}
        ids = torch.tensor(d["input_ids"], dtype=torch.long)
        labels = torch.tensor(d["labels"], dtype=torch.long) if "labels" in d else ids.clone()
    return ids, labels


def cmd_check(a):
    torch.set_num_threads(a.threads)
    model = load_model(a.model, a.attn)
    ids, labels = load_batch(a.batch)
    if a.batch.endswith(".safetensors"):
        ref = load_file(a.batch)
        if "logits" in ref:  # testdata vectors: logits an independent implementation computed
            with torch.no_grad():
                logits = model(input_ids=ids, use_cache=False).logits
                d = (logits.double() - ref["logits"].double()).abs().max().item()
            print(json.dumps({"logits_max_abs_diff": d, "attn": a.attn}), flush=True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_adamw(model, a.lr, a.weight_decay, (a.beta1, a.beta2), a.adam_eps)
    stepper = Stepper(params, opt, a.sam, a.rho, a.eta, a.max_grad_norm)

    def closure():
        loss = causal_lm_loss(model, ids, labels)
        loss.backward()
        return loss.item()

    for step in range(1, a.steps + 1):
        lr = learning_rate_at(a.schedule, a.lr, step - 1, a.warmup_steps, a.steps, a.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = lr
        st = stepper.step(closure)
        st["step"], st["lr"] = step, lr
        print(json.dumps(st), flush=True)


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _reset_peak_rss():
    """As flatune bench train: give freed memory back (malloc_trim, or tcmalloc's release when it
    was preloaded), then reset VmHWM to VmRSS."""
    try:
        import ctypes
        process = ctypes.CDLL(None)
        if hasattr(process, "MallocExtension_ReleaseFreeMemory"):
            process.MallocExtension_ReleaseFreeMemory()
        else:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cmd_bench(a):
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq), generator=g)
    nparams = sum(p.numel() for p in fresh_model(a).parameters())
    import transformers
    print(f"model {nparams / 1e6:.1f}M parameters, batch {a.batch} x {a.seq} tokens, {torch.get_num_threads()} threads "
          f"(python reference, torch {torch.__version__}, transformers {transformers.__version__}, {a.attn} attention"
          f"{', bf16 autocast' if a.bf16 else ''})")
    print(f"{'variant':<12} {'tokens/s':>12} {'vs adamw':>10} {'peak RSS MiB':>14} {'growth MiB':>14}")
    rows, adamw_tps = [], 0.0
    for v in a.variants:
        peak_known = _reset_peak_rss()
        rss_start = _status_kib("VmRSS")
        model = fresh_model(a)
        params = [p for p in model.parameters() if p.requires_grad]
        stepper = Stepper(params, make_adamw(model, 1e-4, 0.0), v, 0.05, 0.01, 1.0)

        def closure():
            # bf16 autocast as users write it; backward outside, as autocast's docs advise.
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
                loss = causal_lm_loss(model, ids, ids)
            loss.backward()
            return loss.item()

        stepper.step(closure)  # warm-up
        t0 = time.perf_counter()
        for _ in range(a.steps):
            stepper.step(closure)
        secs = time.perf_counter() - t0
        tps = a.batch * a.seq * a.steps / secs
        if v == "none":
            adamw_tps = tps
        ratio = adamw_tps / tps if adamw_tps > 0 else 0.0
        name = "adamw" if v == "none" else v
        peak = _status_kib("VmHWM") / 1024.0 if peak_known else -1
        growth = (_status_kib("VmHWM") - rss_start) / 1024.0 if peak_known else -1
        print(f"{name:<12} {tps:>12.0f} {ratio:>9.2f}x {peak:>14.0f} {growth:>14.0f}", flush=True)
        row = {"variant": name, "tokens_per_s": tps, "step_time_vs_adamw": ratio, "attn": a.attn}
        if peak_known:
            row["peak_rss_mib"], row["peak_growth_mib"] = peak, growth
        rows.append(row)
        del model, stepper, closure
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)
            f.write("\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="losses of --steps steps on a fixed batch")
    mode.add_argument("--bench", action="store_true", help="tokens/s of AdamW, SAM and ASAM on a fresh model")
    p.add_argument("--attn", default="sdpa", choices=ATTN, help="transformers' attn_implementation (default sdpa)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: bench keeps torch's default; check uses 1)")
    p.add_argument("--steps", type=int, default=None, help="check: optimizer steps (1); bench: timed steps (5)")
    # check (flatune train's option names and defaults, except --lr)
    p.add_argument("--model", help="Hugging Face model folder")
    p.add_argument("--batch", help="JSON {input_ids, labels} or a safetensors file with input_ids [, labels]")
    p.add_argument("--sam", default="none", choices=["none", "sam", "asam"])
    p.add_argument("--rho", type=float, default=0.05)
    p.add_argument("--eta", "--asam-eta", dest="eta", type=float, default=0.01)
    p.add_argument("--lr", type=float, default=0.0)
    p.add_argument("--schedule", default="constant", choices=["constant", "linear", "cosine"])
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--min-lr-ratio", type=float, default=0.0)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.999)
    p.add_argument("--adam-eps", type=float, default=1e-8)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    # bench (flatune bench train's defaults)
    add_shape_args(p)
    p.add_argument("--batch-size", dest="batch_rows", type=int, default=8)
    p.add_argument("--variants", nargs="+", default=["none", "sam", "asam"], choices=["none", "sam", "asam"])
    p.add_argument("--json", help="bench: also write the results as JSON")
    p.add_argument("--bf16", action="store_true", help="bench: bf16 autocast for the forward passes")
    a = p.parse_args()
    hf_logging.set_verbosity_error()  # quiet stderr: no "loading weights" bar or notices
    hf_logging.disable_progress_bar()
    if a.check:
        if not a.model or not a.batch:
            p.error("--check needs --model and --batch")
        a.steps = a.steps or 1
        a.threads = a.threads or 1
        cmd_check(a)
    else:
        a.steps = a.steps or 5
        a.batch = a.batch_rows
        cmd_bench(a)


if __name__ == "__main__":
    sys.exit(main())
