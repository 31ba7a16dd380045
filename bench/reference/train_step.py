#!/usr/bin/python3
"""Plain PyTorch reference of flatune's training step (issue 11, item 1).

A Llama-family causal LM written in eager PyTorch the way Hugging Face transformers'
LlamaForCausalLM computes it (written for this bench, not copied):
  - RMSNorm: statistics in float32, the weight applied after casting back to the input dtype;
  - rotary embedding with rope_theta (inverse frequencies and angles in float32), the
    rotate-half convention (q * cos + rotate_half(q) * sin), optional linear / llama3 scaling;
  - grouped-query attention by repeating each k/v head num_heads / num_kv_heads times, scores
    q k^T / sqrt(head_dim) plus an additive causal mask of the dtype's lowest value, softmax in
    float32, then @ v;
  - SiLU-gated MLP down(silu(gate(x)) * up(x));
  - lm_head tied to the embedding when tie_word_embeddings;
  - loss: logits in float32, logits[:, :-1] against labels[:, 1:], -100 ignored, mean over the
    label tokens.
Optimizer: torch.optim.AdamW (two groups as flatune: no weight decay on norms, biases and
embeddings), global gradient-norm clipping, and SAM as the usual two-pass recipe:
  sam:  e = rho * g / ||g||;             asam: e = rho * T^2 g / ||T g||, T = |w| + eta;
  second forward/backward at w + e, restore w, base step with the second gradient.

Modes
  --check  load a Hugging Face folder (config.json + model.safetensors [or index + shards]) and a
           fixed batch (JSON {"input_ids": [[...]], "labels": [[...]]} or vectors.safetensors),
           run --steps optimizer steps and print one JSON line per step: loss, grad_norm and,
           for SAM, perturbed_loss and e_norm (the fields flatune's metrics.jsonl has). With a
           testdata vectors.safetensors, first the max |logits - reference logits|.
           bench/reference/check.sh runs it against `flatune train` on the same batch.
  --bench  time --steps steps (after one warm-up) of AdamW, SAM and ASAM on a fresh model of a
           given shape and print tokens/s as `flatune bench train` does (--json FILE too).
Run it with Debian's /usr/bin/python3 (python3-torch, libtorch 1.13 underneath).
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------- safetensors (no package needed)

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_safetensors(path):
    """name -> tensor. Layout: u64 little-endian header size, JSON header, raw little-endian data."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES[info["dtype"]]
        start, end = info["data_offsets"]
        shape = info["shape"]
        if end == start:
            out[name] = torch.empty(shape, dtype=dtype)
            continue
        buf = bytearray(blob[base + start:base + end])  # a private, writable copy
        out[name] = torch.frombuffer(buf, dtype=dtype).reshape(shape)
    return out


def read_checkpoint(folder):
    single = os.path.join(folder, "model.safetensors")
    if os.path.exists(single):
        return read_safetensors(single)
    with open(os.path.join(folder, "model.safetensors.index.json")) as f:
        index = json.load(f)
    out = {}
    for shard in sorted(set(index["weight_map"].values())):
        out.update(read_safetensors(os.path.join(folder, shard)))
    return out


# ---------------------------------------------------------------- the model


class Config:
    def __init__(self, d):
        self.model_type = d.get("model_type", "llama")
        self.vocab_size = d["vocab_size"]
        self.hidden_size = d["hidden_size"]
        self.intermediate_size = d["intermediate_size"]
        self.num_hidden_layers = d["num_hidden_layers"]
        self.num_attention_heads = d["num_attention_heads"]
        self.num_key_value_heads = d.get("num_key_value_heads") or self.num_attention_heads
        self.head_dim = d.get("head_dim") or self.hidden_size // self.num_attention_heads
        self.rms_norm_eps = d.get("rms_norm_eps", 1e-6)
        self.rope_theta = d.get("rope_theta", 10000.0)
        self.rope_scaling = d.get("rope_scaling")
        self.tie_word_embeddings = d.get("tie_word_embeddings", False)
        self.attention_bias = d.get("attention_bias", False)
        self.mlp_bias = d.get("mlp_bias", False)
        # Qwen2: bias on q, k, v only.
        self.qkv_bias = self.attention_bias or self.model_type == "qwen2"
        self.o_bias = self.attention_bias and self.model_type != "qwen2"
        self.initializer_range = d.get("initializer_range", 0.02)


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


def rope_inv_freq(c):
    d = c.head_dim
    inv = 1.0 / (c.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    s = c.rope_scaling
    if s:
        kind = s.get("rope_type", s.get("type"))
        if kind == "linear":
            inv = inv / s["factor"]
        elif kind == "llama3":
            factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
            old = s["original_max_position_embeddings"]
            low_wl, high_wl = old / low, old / high
            wl = 2 * math.pi / inv
            scaled = torch.where(wl > low_wl, inv / factor, inv)
            smooth = (old / wl - low) / (high - low)
            smoothed = (1 - smooth) * scaled / factor + smooth * scaled
            medium = (wl >= high_wl) & (wl <= low_wl)
            inv = torch.where(medium, smoothed, scaled)
        elif kind not in (None, "default"):
            raise SystemExit(f"rope_scaling type {kind!r} not supported by the reference")
    return inv


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def repeat_kv(x, n):
    if n == 1:
        return x
    b, h, t, d = x.shape
    return x[:, :, None].expand(b, h, n, t, d).reshape(b, h * n, t, d)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.h, self.kv, self.d = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, self.h * self.d, bias=c.qkv_bias)
        self.k_proj = nn.Linear(c.hidden_size, self.kv * self.d, bias=c.qkv_bias)
        self.v_proj = nn.Linear(c.hidden_size, self.kv * self.d, bias=c.qkv_bias)
        self.o_proj = nn.Linear(self.h * self.d, c.hidden_size, bias=c.o_bias)

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.d).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv, self.d).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv, self.d).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = repeat_kv(k, self.h // self.kv)
        v = repeat_kv(v, self.h // self.kv)
        w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.d)
        w = w + mask
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        o = torch.matmul(w, v).transpose(1, 2).contiguous().reshape(b, t, self.h * self.d)
        return self.o_proj(o)


class Mlp(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=c.mlp_bias)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = Attention(c)
        self.mlp = Mlp(c)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Body(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList([Layer(c) for _ in range(c.num_hidden_layers)])
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = c
        self.model = Body(c)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        if c.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.register_buffer("inv_freq", rope_inv_freq(c), persistent=False)

    def init_weights(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if "norm" in name:
                    p.fill_(1.0)
                elif p.dim() == 1:
                    p.zero_()
                else:
                    p.normal_(0.0, self.config.initializer_range, generator=g)

    def forward(self, input_ids):
        b, t = input_ids.shape
        x = self.model.embed_tokens(input_ids)
        pos = torch.arange(t).unsqueeze(0).expand(b, t).float()
        freqs = pos[:, :, None] * self.inv_freq.float()[None, None, :]  # [B, T, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(x.dtype)[:, None], emb.sin().to(x.dtype)[:, None]
        mask = torch.full((t, t), torch.finfo(x.dtype).min, dtype=x.dtype).triu(1)[None, None]
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask)
        return self.lm_head(self.model.norm(x))


def causal_lm_loss(logits, labels):
    v = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, v), labels[:, 1:].reshape(-1), ignore_index=-100)


def load_model(folder):
    with open(os.path.join(folder, "config.json")) as f:
        c = Config(json.load(f))
    m = LlamaForCausalLM(c)
    w = {k: v for k, v in read_checkpoint(folder).items() if not k.endswith("rotary_emb.inv_freq")}
    if c.tie_word_embeddings:
        w.pop("lm_head.weight", None)
        w["lm_head.weight"] = w["model.embed_tokens.weight"]
    m.load_state_dict({k: v.float() for k, v in w.items()}, strict=True)
    return m


# ---------------------------------------------------------------- the step


def make_adamw(model, lr, wd, betas=(0.9, 0.999), eps=1e-8):
    decay, exempt = [], []
    for name, p in model.named_parameters():  # a tied lm_head appears once, as the embedding
        if not p.requires_grad:
            continue
        (exempt if p.dim() < 2 or "norm" in name or "embed" in name or name.endswith("bias") else decay).append(p)
    groups = [g for g in ({"params": decay, "weight_decay": wd}, {"params": exempt, "weight_decay": 0.0}) if g["params"]]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


class Stepper:
    """One optimizer step: AdamW alone or wrapped by SAM / ASAM (two passes)."""

    def __init__(self, params, opt, kind="none", rho=0.05, eta=0.01, max_grad_norm=1.0):
        self.params, self.opt, self.kind = list(params), opt, kind
        self.rho, self.eta, self.max_grad_norm = rho, eta, max_grad_norm

    def step(self, closure):
        st = {}
        self.opt.zero_grad(set_to_none=False)
        st["loss"] = closure()
        if self.kind in ("sam", "asam"):
            with torch.no_grad():
                ps = [p for p in self.params if p.grad is not None]
                gs = [p.grad for p in ps]
                if self.kind == "asam":
                    ts = [p.abs() + self.eta for p in ps]
                    n = torch.norm(torch.stack([(t * g).norm(2) for t, g in zip(ts, gs)]), 2)
                    scale = self.rho / (n + 1e-12)
                    es = [t * t * g * scale for t, g in zip(ts, gs)]
                else:
                    n = torch.norm(torch.stack([g.norm(2) for g in gs]), 2)
                    scale = self.rho / (n + 1e-12)
                    es = [g * scale for g in gs]
                st["e_norm"] = torch.norm(torch.stack([e.norm(2) for e in es]), 2).item()
                saved = [p.detach().clone() for p in ps]
                for p, e in zip(ps, es):
                    p.add_(e)
            self.opt.zero_grad(set_to_none=False)
            st["perturbed_loss"] = closure()
            with torch.no_grad():
                for p, w in zip(ps, saved):
                    p.copy_(w)
        if self.max_grad_norm > 0:
            st["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm).item()
        else:
            st["grad_norm"] = torch.norm(torch.stack([p.grad.norm(2) for p in self.params if p.grad is not None]), 2).item()
        self.opt.step()
        return st


# ---------------------------------------------------------------- modes


def load_batch(path):
    if path.endswith(".safetensors"):
        t = read_safetensors(path)
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
    model = load_model(a.model)
    ids, labels = load_batch(a.batch)
    if a.batch.endswith(".safetensors"):
        ref = read_safetensors(a.batch)
        if "logits" in ref:  # testdata vectors: logits an independent implementation computed
            with torch.no_grad():
                d = (model(ids).double() - ref["logits"].double()).abs().max().item()
            print(json.dumps({"logits_max_abs_diff": d}), flush=True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_adamw(model, a.lr, a.weight_decay)
    stepper = Stepper(params, opt, a.sam, a.rho, a.eta, a.max_grad_norm)

    def closure():
        loss = causal_lm_loss(model(ids), labels)
        loss.backward()
        return loss.item()

    for step in range(1, a.steps + 1):
        st = stepper.step(closure)
        st["step"] = step
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
    c = Config({"vocab_size": a.vocab, "hidden_size": a.hidden, "intermediate_size": a.ffn,
                "num_hidden_layers": a.layers, "num_attention_heads": a.heads, "num_key_value_heads": a.heads,
                "max_position_embeddings": a.seq})
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq), generator=g)
    nparams = sum(p.numel() for p in LlamaForCausalLM(c).parameters())
    print(f"model {nparams / 1e6:.1f}M parameters, batch {a.batch} x {a.seq} tokens, {torch.get_num_threads()} threads "
          f"(python reference, torch {torch.__version__}{', bf16 autocast' if a.bf16 else ''})")
    print(f"{'variant':<12} {'tokens/s':>12} {'vs adamw':>10} {'peak RSS MiB':>14} {'growth MiB':>14}")
    rows, adamw_tps = [], 0.0
    for v in a.variants:
        peak_known = _reset_peak_rss()
        rss_start = _status_kib("VmRSS")
        model = LlamaForCausalLM(c)
        model.init_weights(0)
        params = [p for p in model.parameters() if p.requires_grad]
        stepper = Stepper(params, make_adamw(model, 1e-4, 0.0), v, 0.05, 0.01, 1.0)

        def closure():
            # bf16 autocast as users write it; backward outside, as autocast's docs advise.
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
                loss = causal_lm_loss(model(ids), ids)
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
        row = {"variant": name, "tokens_per_s": tps, "step_time_vs_adamw": ratio}
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
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: bench keeps torch's default; check uses 1)")
    p.add_argument("--steps", type=int, default=None, help="check: optimizer steps (1); bench: timed steps (5)")
    # check
    p.add_argument("--model", help="Hugging Face model folder")
    p.add_argument("--batch", help="JSON {input_ids, labels} or a safetensors file with input_ids [, labels]")
    p.add_argument("--sam", default="none", choices=["none", "sam", "asam"])
    p.add_argument("--rho", type=float, default=0.05)
    p.add_argument("--eta", type=float, default=0.01)
    p.add_argument("--lr", type=float, default=0.0)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    # bench (flatune bench train's defaults)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ffn", type=int, default=688)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch-size", dest="batch_rows", type=int, default=8)
    p.add_argument("--variants", nargs="+", default=["none", "sam", "asam"], choices=["none", "sam", "asam"])
    p.add_argument("--json", help="bench: also write the results as JSON")
    p.add_argument("--bf16", action="store_true", help="bench: bf16 autocast for the forward passes")
    a = p.parse_args()
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
    main()
