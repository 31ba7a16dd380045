#!/usr/bin/env python3
"""bench/RESULTS.md from a bench/matrix.sh summary.json: the issue-21 targets checked first, then
every table. Every ratio is between figures of the same run of the matrix.
  .venv/bin/python bench/results_md.py bench/results/matrix-<time>/summary.json > bench/RESULTS.md
"""
import json
import sys

SHAPES = {"1m": "1M (hidden 128, 4 layers, vocab 2,000)", "10m": "10M (hidden 256, 8 layers, vocab 8,000)",
          "50m": "50M (hidden 512, 12 layers, vocab 16,000)"}


def x(v, spec=".2f"):
    return "-" if v is None else format(v, spec) + "×"


def tok(v):
    return "-" if v is None else f"{v:.0f}"


def pct(v):
    return "-" if v is None else f"{100 * v:.0f}%"


def trainer_rows(s, name):
    return {r["variant"]: r["tokens_per_s"] for r in s.get("trainer", {}).get(name, [])}


def fastest_peer(row, trainer):
    """The fastest of the peers as users run them (plain loop with glibc's malloc, Trainer)."""
    cands = [(row["python"]["tokens_per_s"], "transformers loop")] if row.get("python") else []
    if row["variant"] in trainer:
        cands.append((trainer[row["variant"]], "Trainer"))
    return max(cands) if cands else (None, None)


def sft_runs(s):
    """bench/sft.py's results by name, smallest model first, fp32 before bf16, transformers before torchtune."""
    sft = s.get("sft", {})
    order = lambda n: (sft[n]["bf16"], sft[n]["parameters"], sft[n].get("peer", "transformers") != "transformers")
    return {n: sft[n] for n in sorted(sft, key=order)}


def sft_section(w, sft):
    w("## Instruction tuning on variable-length data (`bench/sft.py`)\n")
    w("The tables above give every program full rows of one sequence with a loss on every token, where all of "
      "them run the same kernels. Instruction tuning is not like that, so this part times one epoch of it: a "
      "generated Alpaca-format file (`bench/peers/hf_sft.py --make`: words that are one token each, log-normal "
      "lengths like Stanford Alpaca's, about 135 tokens an example with the Alpaca prompt, half of them prompt, "
      "a long tail of responses; at most 1,000 tokens), a fresh model of the shape at the 32,000-piece "
      "Llama-2-style vocabulary of shared/testdata's spm-bpe-32k, batch 8 examples, AdamW (constant lr 1e-4, "
      "clipping 1.0) or SAM (rho 0.05). *flatune pack*: `flatune train --pack` (the batch's examples in as few "
      "and as even rows of at most 1,024 tokens as fit, attention span by span); *flatune pad*: `flatune train` "
      "(padded to the longest in the batch); *hf pad*: `transformers.Trainer` with DataCollatorForSeq2Seq "
      "(padded to the longest in the batch, the documented recipe); *hf group*: the same with "
      "`train_sampling_strategy=\"group_by_length\"`; *hf flatten*: DataCollatorWithFlattening (the batch in one "
      "row, from whose position ids transformers builds a block-diagonal causal mask for sdpa). tok/s: real "
      "(not padding) tokens of the steps after the first over their wall time, best of the rounds; in brackets the "
      "share of padding in the peer's batches. Both programs tokenize the same file with the same tokenizer.json, "
      "and compute the same loss (mean over the batch's response tokens). Where the lead comes from, read off "
      "the tables: *flatune pad* against *hf pad* (the same padded batches) is flatune's loss, the LM head and "
      "cross-entropy run in chunks over the response tokens only (prompt and padding rows never reach the head, "
      "which at a 32,000 vocabulary holds a large share of a small model's FLOPs; HF computes [tokens, vocab] "
      "float logits for every position); *flatune pack* against *flatune pad* is packing, which the peers' "
      "group and flatten modes get part of.\n")
    w("The tables *against torchtune* (`bench/sft.py --peer torchtune`, `bench/peers/torchtune_sft.py`) run its "
      "`full_finetune_single_device` recipe unchanged on a file and model made the same way but with the Llama-2 "
      "SentencePiece model of shared/testdata's llama2-spm (torchtune's tokenizer reads only that; flatune reads "
      "it too), torchtune's `alpaca_dataset` (its Alpaca prompt, loss on responses) without the tokenizer's "
      "[INST] chat template, its chunked cross-entropy, AdamW only (the recipe has no SAM): *torchtune pack*: "
      "`packed: True`, one pack of 1,024 tokens a step (about 8 examples; a block-causal mask, which off CUDA is a "
      "dense mask for sdpa); *torchtune pad*: batch 8 examples padded to the longest. Its prompt ends in a newline "
      "flatune's does not have, so it counts about 2 tokens an example more.\n")
    for name, t in sft.items():
        peer = t.get("peer", "transformers")
        label = "hf" if peer == "transformers" else peer
        modes = [k[len(peer) + 1:] for k in t["summary"][0] if k.startswith(peer + "_")]
        w(f"### The {t['shape'].upper()} shape's layers (hidden {t['hidden']}, {t['layers']} layers) at vocabulary "
          f"{t['vocab']:,}: {t['parameters'] / 1e6:.1f}M parameters; {t['examples']} examples, "
          f"{'bf16 autocast' if t['bf16'] else 'fp32'}; best of {t['rounds']} round{'s' if t['rounds'] > 1 else ''}"
          f"{'' if peer == 'transformers' else '; against ' + peer}\n")
        counts = {p: sorted({int(r["epoch_tokens"]) for r in t["runs"] if r["program"] == p})
                  for p in ("flatune", peer)}
        if all(len(c) == 1 for c in counts.values()) and counts["flatune"] == counts[peer]:
            w(f"Tokens in the epoch: {counts['flatune'][0]:,} in every run of both programs.\n")
        else:
            w("Tokens in the epoch: " + "; ".join(f"{p} " + ", ".join(f"{c:,}" for c in cs)
                                                  for p, cs in counts.items()) + ".\n")
        w("| variant | flatune pack tok/s | flatune pad tok/s | " + " | ".join(f"{label} {m} tok/s" for m in modes)
          + " | flatune pack / fastest peer |")
        w("|---" * (4 + len(modes)) + "|")
        for r in t["summary"]:
            cells = " | ".join(f"{r[peer + '_' + m]:.0f} ({pct(r['padding_share'][m])})" for m in modes)
            w(f"| {r['variant']} | {r['flatune_pack']:.0f} | {r['flatune_pad']:.0f} | {cells} | "
              f"{r['ratio_vs_fastest_peer']:.2f}× ({r['fastest_peer']}) |")
        w("")


def main():
    s = json.load(open(sys.argv[1]))
    # Smallest model first, fp32 before bf16, sequence 256 before 1024.
    order = lambda n: (n.endswith("bf16"), int(n.split("m-")[0]), int(n.split("-")[1]))
    train = {n: s["train"][n] for n in sorted(s["train"], key=order)}
    first = next(iter(train.values()))
    out = []
    w = out.append
    w("# flatune benchmark results\n")
    dates = sorted({t["date"][:10] for t in train.values()})
    when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]} (tables re-run after a change replace theirs)"
    w(f"Measured {when} with `bash bench/matrix.sh`, rendered by `bench/results_md.py` from its "
      "`summary.json` (copied to `bench/RESULTS.json`: every round of every program is there).\n")
    w(f"**Machine**: {first['cpu']}, {first['nproc']} cores, {first['threads']} threads for every program, "
      "OpenMP wait policy as each program sets it for a user (the peers libgomp's default, flatune ACTIVE: "
      "MKL's products run on libgomp's threads). flatune on the libtorch of the venv's torch "
      f"{first.get('torch_python', '?')} wheel, linked with tcmalloc; the peers on the same torch in the same venv: "
      f"transformers {first.get('transformers', '?')} (`LlamaForCausalLM`, sdpa attention), "
      f"lm-evaluation-harness {s['lm_eval'].get('lm_eval_version', '')}, torchtune (see its section). "
      "GEMM peak: the best 1024³ product during each `flatune bench train` run (measured at its start and after "
      "every round), each shape's MFU against its own: fp32 "
      f"{min(t['gemm_peak_fp32_gflops'] for t in train.values()):.0f}–"
      f"{max(t['gemm_peak_fp32_gflops'] for t in train.values()):.0f}, bf16 "
      f"{min(t['gemm_peak_bf16_gflops'] for t in train.values()):.0f}–"
      f"{max(t['gemm_peak_bf16_gflops'] for t in train.values()):.0f} GFLOP/s.\n")
    w("**Peers**: *transformers loop* = `bench/reference/train_step.py --bench` (a plain loop: model(ids, "
      "labels).loss, backward, clipping, `torch.optim.AdamW`; SAM/ASAM as two passes), run as users run it "
      "(glibc malloc) and again with `LD_PRELOAD` of flatune's tcmalloc (*loop+tcm*); *Trainer* = "
      "`bench/peers/hf_trainer.py` (`transformers.Trainer`, optim adamw_torch, SAM in `training_step`); "
      "*torchtune* = its `full_finetune_single_device` recipe unchanged (`bench/peers/torchtune_recipe.py`). "
      "Same shape, batch, data size and threads. Each training figure is the best of its rounds (processes); "
      "flatune's is the first of the rounds it times within each process, the block a peer's process times too. "
      "The VM varies by ±20–30% between identical runs, so read ratios within ±15% as ties.\n")

    # ---------------------------------------------------------------- targets
    w("## The targets (issue 21)\n")
    w("| target | measured | met |\n|---|---|---|")
    lead = []
    for name, t in train.items():
        trainer = trainer_rows(s, name)
        for row in t["rows"]:
            if row["variant"] not in ("adamw", "sam"):
                continue
            peer, who = fastest_peer(row, trainer)
            if peer:
                lead.append((row["flatune"]["tokens_per_s"] / peer, f"{name} {row['variant']} (vs {who})"))
    if lead:
        lo, hi = min(lead), max(lead)
        w(f"| training tokens/s ≥ 1.5× the fastest peer (AdamW and SAM, every shape), full rows of one sequence, loss "
          f"on every token | {lo[0]:.2f}× ({lo[1]}) to {hi[0]:.2f}× ({hi[1]}) | {'yes' if lo[0] >= 1.5 else 'no'} |")
    sft = sft_runs(s)
    if sft:
        cells, worst = [], None
        for variant in ("adamw", "sam"):
            vals = [(r["ratio_vs_fastest_peer"], f"{name}, vs {r['fastest_peer']}") for name, t in sft.items()
                    for r in t["summary"] if r["variant"] == variant]
            if vals:
                lo, hi = min(vals), max(vals)
                cells.append(f"{variant} {lo[0]:.2f}× ({lo[1]}) to {hi[0]:.2f}× ({hi[1]})")
                worst = lo[0] if worst is None else min(worst, lo[0])
        w(f"| the same on instruction tuning (variable-length Alpaca-style examples, loss on responses; "
          f"`bench/sft.py`) | {'; '.join(cells)} | {'yes' if worst >= 1.5 else 'no'} |")
    for prec, key, goal, shapes in (("fp32", "mfu_fp32", 0.60, ("10m-256", "10m-1024", "50m-256")),
                                    ("bf16", "mfu_bf16", 0.50, ("10m-256-bf16", "50m-256-bf16"))):
        vals = [(r["mfu_flatune"], f"{n} {r['variant']}") for n in shapes if n in train for r in train[n]["rows"]
                if r["variant"] == "adamw"]
        if vals:
            w(f"| {prec} MFU ≥ {goal:.0%} of the measured GEMM peak (10M, 50M; AdamW) | "
              + ", ".join(f"{v:.1%} ({k})" for v, k in vals) + f" | {'yes' if min(vals)[0] >= goal else 'no'} |")
    for variant, goal in (("sam", 2.0), ("looksam", 1.25)):
        vals = [(r["flatune"]["step_time_vs_adamw"], n) for n, t in train.items() for r in t["rows"]
                if r["variant"] == variant]
        if vals:
            w(f"| {variant} step ≤ {goal}× an AdamW step | {min(vals)[0]:.2f}× to {max(vals)[0]:.2f}× over "
              f"{len(vals)} shapes | {'yes' if max(vals)[0] <= goal else 'no'} |")
    le = s["lm_eval"]
    w(f"| multiple-choice evaluation ≥ 3× lm-eval's items/s, same results | {le['ratio_best']:.2f}× (best setting of "
      f"each), {'same acc and acc_norm' if not le['mismatches'] else 'results differ'} | "
      f"{'yes' if le['ratio_best'] >= 3 and not le['mismatches'] else 'no'} |")
    peaks = [(r["flatune"]["tensor_peak_mib"] / (r["flatune"]["state_mib"] + r["flatune"]["activations_mib"]),
              f"{n} {r['variant']}") for n, t in train.items() for r in t["rows"]]
    w(f"| tensor peak within 1.2× of weights + gradients + optimizer state + activations | {min(peaks)[0]:.2f}× to "
      f"{max(peaks)[0]:.2f}× ({max(peaks)[1]}) | {'yes' if max(peaks)[0] <= 1.2 else 'no'} |")
    w("| activation checkpointing trades measured time for measured memory | `--checkpoint-activations` "
      "(issue 22): tensor peak 526 → 240 MiB at 0.74× tokens/s, 10M seq 1024 | yes |\n")

    # ---------------------------------------------------------------- training tables
    w("## Training\n")
    w("tok/s: tokens per second over the timed steps (after one warm-up step). *step vs adamw*: this variant's "
      "step time against flatune's AdamW step, from rounds that take the variants in turn within one process "
      "(`bench train --rounds 3`, each variant's best round; the median over the processes). *state*: weights + gradients + optimizer (and SAM) state between "
      "steps; *activ.*: tensors the forward keeps for backward; *tensor peak*: high-water mark of live tensor "
      "bytes in a step (MiB). The loop has no LookSAM, sam-subset or LoRA; Trainer has AdamW and SAM.\n")
    for name, t in train.items():
        sh = t["shape"]
        size = SHAPES.get(name.split("-")[0], name)
        w(f"### {size}; batch {sh['batch']} × {sh['seq']}, {'bf16 autocast' if sh['bf16'] else 'fp32'}; "
          f"best of {t['rounds']} round{'s' if t['rounds'] > 1 else ''} × {t['steps']} steps\n")
        trainer = trainer_rows(s, name)
        w("| variant | flatune tok/s | loop tok/s | ratio | loop+tcm tok/s | ratio | Trainer tok/s | ratio | "
          "step vs adamw | MFU flatune | state | activ. | tensor peak | peak/sum |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in t["rows"]:
            f = r["flatune"]
            tr = trainer.get(r["variant"])
            w(f"| {r['variant']} | {tok(f['tokens_per_s'])} | {tok(r['python'] and r['python']['tokens_per_s'])} | "
              f"{x(r['ratio'])} | {tok(r['python_tcmalloc'] and r['python_tcmalloc']['tokens_per_s'])} | "
              f"{x(r['ratio_tcmalloc'])} | {tok(tr)} | {x(tr and f['tokens_per_s'] / tr)} | "
              f"{f['step_time_vs_adamw']:.2f}× | {pct(r['mfu_flatune'])} | {f['state_mib']:.0f} | "
              f"{f['activations_mib']:.0f} | {f['tensor_peak_mib']:.0f} | "
              f"{f['tensor_peak_mib'] / (f['state_mib'] + f['activations_mib']):.2f}× |")
        w("")

    sft = sft_runs(s)
    if sft:
        sft_section(w, sft)

    # ---------------------------------------------------------------- torchtune
    tt = s.get("torchtune", {})
    if tt:
        w("## torchtune's full_finetune_single_device recipe\n")
        w("Run in a venv of its own (`.venv-torchtune`, the same torch 2.13 wheel): torchtune 0.6.1 needs "
          "torchao 0.11, which PEFT 0.21 in the project venv refuses (`bench/peers/setup-torchtune.sh`). "
          "10M shape at the recipe's vocabulary (32,000: the Llama-2 SentencePiece model), batch 8 × 256 packed "
          "text, AdamW; flatune `bench train` at the same shape right after. torchtune's bf16 is bf16 weights and "
          "optimizer state (cheaper, different numerics); flatune's is bf16 autocast over fp32 weights.\n")
        w("| setting | torchtune tok/s | flatune tok/s | ratio |\n|---|---|---|---|")
        for name in sorted(k for k in tt if not k.startswith("flatune-")):
            ours = tt.get("flatune-" + name)
            theirs = tt[name][0]["tokens_per_s"]
            mine = next((r["tokens_per_s"] for r in ours if r["variant"] == "adamw"), None) if ours else None
            w(f"| {name} ({tt[name][0]['dtype']}) | {theirs:.0f} | {tok(mine)} | {x(mine and mine / theirs)} |")
        w("")

    # ---------------------------------------------------------------- evaluation
    w("## Multiple-choice evaluation against lm-evaluation-harness\n")
    w(f"{le['items']} items (ARC-style and HellaSwag-style, generated), a {le['parameters'] / 1e6:.1f}M random "
      "Llama saved by transformers with a byte-level tokenizer; wall clock of each evaluation call, model "
      "loading included; lm-eval's `hf` model on the CPU. "
      + ("acc and acc_norm equal on every suite." if not le["mismatches"] else "Results differ: "
         + "; ".join(le["mismatches"])) + (f" This table was {le['note']}." if le.get("note") else "") + "\n")
    w("| program | batch | seconds | items/s |\n|---|---|---|---|")
    for r in le["rows"]:
        w(f"| {r['program']} | {r['batch']} | {r['seconds']:.1f} | {r['items_per_s']:.1f} |")
    w("")
    w("flatune's own paths (`flatune bench eval`):\n\n```\n" + s["eval"].strip() + "\n```\n")
    if s.get("profile"):
        w("## Where the time goes (flatune bench train --profile, 10M fp32 AdamW)\n")
        w("| op | share of op time |\n|---|---|")
        for op, share in s["profile"][:15]:
            w(f"| `{op}` | {share:.1%} |")
        w("")
    w("## Tokenizers (`flatune bench tokenize`)\n\n```\n" + s["tokenize"].strip() + "\n```")
    print("\n".join(out))


if __name__ == "__main__":
    main()
