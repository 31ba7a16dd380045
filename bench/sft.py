#!/usr/bin/env python3
"""Instruction tuning on variable-length data: `flatune train` against transformers.Trainer
(issue 21). The fixed-length benchmark (bench/run.sh) gives every program full rows with a loss
on every token, where all of them run the same libtorch kernels and come out even; this one
times the workload instruction tuning is: examples of different lengths, loss on the responses.

One epoch over the same generated Alpaca-format file (bench/peers/hf_sft.py --make: about 135
tokens an example, half of them prompt, a long tail of responses; a fresh model of the shape with
the 32,000-piece Llama-2-style tokenizer), batch 8 examples, AdamW (constant lr 1e-4, no decay,
clipping 1.0) or SAM (rho 0.05), each program as its users run it:
  flatune pack  `flatune train --pack`: the batch's examples in rows of at most --max-length
                (as few and as even as fit), attention span by span inside a row
  flatune pad   `flatune train`: each batch padded to its longest example
  hf pad        Trainer + DataCollatorForSeq2Seq (padding to the longest in the batch)
  hf group      the same, batches grouped by length
  hf flatten    Trainer + DataCollatorWithFlattening (one row, block-diagonal causal mask)
Both programs tokenize the same file with the same tokenizer.json. --peer torchtune times
torchtune's full_finetune_single_device recipe instead (bench/peers/torchtune_sft.py, in
.venv-torchtune; AdamW only, its recipe has no SAM), on a file and model made with the Llama-2
SentencePiece model (its tokenizer reads only that; flatune reads it too):
  torchtune pack  packed: True, one pack of --max-length tokens a step (about 8 examples)
  torchtune pad   batch --batch examples padded to the longest
tokens/s counts real (not padding) tokens of the steps after the first, over their wall time;
each figure is the best of --rounds processes (the order alternates between rounds). Writes every
run and the summary to --json (default bench/results/sft-<UTC time>.json) and prints a Markdown
table.
Run: .venv/bin/python bench/sft.py [--shape 10m] [--rounds 2] [--variants adamw sam] [--bf16]
                                   [--peer transformers|torchtune] [--peer-modes ...]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
TORCHTUNE_PYTHON = os.path.join(ROOT, ".venv-torchtune", "bin", "python")  # bench/peers/setup-torchtune.sh
PEER_MODES = {"transformers": ["pad", "group", "flatten"], "torchtune": ["pack", "pad"]}
SHAPES = {  # hidden layers heads ffn: bench/run.sh's shapes, with the tokenizer's vocabulary
    "1m": (128, 4, 4, 344),
    "10m": (256, 8, 4, 688),
    "50m": (512, 12, 8, 1376),
}


def flatune_run(a, data, variant, pack):
    out = os.path.join(data, "run")
    shutil.rmtree(out, ignore_errors=True)
    cmd = [os.path.join(ROOT, "build", "flatune"), "train", "--model", os.path.join(data, "model"), "--data",
           os.path.join(data, "train.jsonl"), "--format", "alpaca", "--template", "alpaca", "--max-length",
           str(a.max_length), "--batch-size", str(a.batch), "--epochs", "1", "--lr", "1e-4", "--schedule", "constant",
           "--weight-decay", "0", "--max-grad-norm", "1", "--log-every", "1", "--out", out, "--threads",
           str(a.threads)]
    if pack:
        cmd.append("--pack")
    if variant == "sam":
        cmd += ["--sam", "sam", "--rho", "0.05"]
    if a.bf16:
        cmd.append("--bf16")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    steps = []
    with open(os.path.join(out, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            if "tokens_per_s" in row:
                steps.append(row)
    # tokens and tokens/s are cumulative over training time: the time at each step is their ratio.
    first, last = steps[0], steps[-1]
    seconds = last["tokens"] / last["tokens_per_s"] - first["tokens"] / first["tokens_per_s"]
    tokens = last["tokens"] - first["tokens"]
    return {"program": "flatune", "mode": "pack" if pack else "pad", "variant": variant, "tokens": tokens,
            "seconds": seconds, "tokens_per_s": tokens / seconds, "steps": len(steps), "epoch_tokens": last["tokens"]}


def peer_run(a, data, variant, mode):
    """One epoch of the peer (transformers' Trainer in this venv, or torchtune's recipe in its own)."""
    if a.peer == "torchtune":
        python, script, extra = TORCHTUNE_PYTHON, "torchtune_sft.py", []
    else:
        python, script, extra = sys.executable, "hf_sft.py", ["--variant", variant]
    with tempfile.NamedTemporaryFile(suffix=".json") as j:
        cmd = [python, os.path.join(ROOT, "bench", "peers", script), "--data", data, "--mode", mode, *extra,
               "--batch", str(a.batch), "--max-length", str(a.max_length), "--threads", str(a.threads), "--json", j.name]
        if a.bf16:
            cmd.append("--bf16")
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        with open(j.name) as f:
            r = json.load(f)
    r["program"] = a.peer
    return r


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="10m")
    p.add_argument("--examples", type=int, default=160)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--variants", nargs="+", choices=["adamw", "sam"], default=["adamw", "sam"])
    p.add_argument("--peer", choices=["transformers", "torchtune"], default="transformers")
    p.add_argument("--peer-modes", nargs="+", choices=sorted(set(PEER_MODES["transformers"] + PEER_MODES["torchtune"])),
                   help="the peer's modes to run (default: all it has)")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--json")
    a = p.parse_args()
    if not os.access(os.path.join(ROOT, "build", "flatune"), os.X_OK):
        sys.exit("bench/sft.py: build/flatune is missing: run scripts/build.sh")
    modes = a.peer_modes or PEER_MODES[a.peer]
    if any(m not in PEER_MODES[a.peer] for m in modes):
        sys.exit(f"bench/sft.py: {a.peer}'s modes are {' '.join(PEER_MODES[a.peer])}")
    if a.peer == "torchtune":
        if a.variants != ["adamw"]:
            sys.exit("bench/sft.py: torchtune's recipe has no SAM (no hook for a second pass): give --variants adamw")
        if not os.access(TORCHTUNE_PYTHON, os.X_OK):
            sys.exit("bench/sft.py: .venv-torchtune is missing: run bench/peers/setup-torchtune.sh")
    # Each program waits between parallel regions as it does for a user (bench/run.sh says why).
    os.environ.pop("OMP_WAIT_POLICY", None)
    hidden, layers, heads, ffn = SHAPES[a.shape]
    runs = []
    with tempfile.TemporaryDirectory(prefix="flatune-sft.") as data:
        subprocess.run([sys.executable, os.path.join(ROOT, "bench", "peers", "hf_sft.py"), "--make", data,
                        "--examples", str(a.examples), "--hidden", str(hidden), "--layers", str(layers), "--heads",
                        str(heads), "--ffn", str(ffn), "--tokenizer", "spm" if a.peer == "torchtune" else "json"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        with open(os.path.join(data, "model", "config.json")) as f:
            cfg = json.load(f)
        jobs = [("flatune", m) for m in ("pack", "pad")] + [(a.peer, m) for m in modes]
        for rnd in range(a.rounds):
            for variant in a.variants:
                for program, mode in (jobs if rnd % 2 == 0 else jobs[::-1]):
                    r = (flatune_run(a, data, variant, mode == "pack") if program == "flatune" else
                         peer_run(a, data, variant, mode))
                    r["round"] = rnd
                    runs.append(r)
                    print(f"round {rnd} {variant:<6} {program:<12} {mode:<8} {r['tokens_per_s']:8.0f} tokens/s",
                          flush=True)
    best = {}
    for r in runs:
        k = (r["variant"], r["program"], r["mode"])
        if k not in best or r["tokens_per_s"] > best[k]["tokens_per_s"]:
            best[k] = r
    summary = []
    for variant in a.variants:
        ours = best[(variant, "flatune", "pack")]["tokens_per_s"]
        peers = [best[(variant, a.peer, m)] for m in modes]
        fastest = max(peers, key=lambda r: r["tokens_per_s"])
        summary.append({"variant": variant, "flatune_pack": ours,
                        "flatune_pad": best[(variant, "flatune", "pad")]["tokens_per_s"],
                        **{f"{a.peer}_{r['mode']}": r["tokens_per_s"] for r in peers},
                        "padding_share": {r["mode"]: r["padding_share"] for r in peers},
                        "fastest_peer": f"{a.peer} {fastest['mode']}",
                        "ratio_vs_fastest_peer": ours / fastest["tokens_per_s"]})
    params = (cfg["vocab_size"] * hidden * 2 + layers * (4 * hidden * hidden + 3 * hidden * ffn + 2 * hidden) + hidden)
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "shape": a.shape, "hidden": hidden,
              "layers": layers, "vocab": cfg["vocab_size"], "parameters": params, "examples": a.examples, "peer": a.peer,
              "batch": a.batch, "bf16": a.bf16, "threads": a.threads, "rounds": a.rounds, "summary": summary,
              "runs": runs}
    out = a.json or os.path.join(ROOT, "bench", "results", time.strftime("sft-%Y%m%dT%H%M%SZ.json", time.gmtime()))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    heads = " | ".join(f"{a.peer} {m} tok/s (padding)" for m in modes)
    print(f"\n{a.shape} ({params / 1e6:.1f}M parameters, vocab {cfg['vocab_size']}), {a.examples} examples, batch "
          f"{a.batch}, {'bf16 autocast' if a.bf16 else 'fp32'}, {a.threads} threads, best of {a.rounds}\n")
    print(f"| variant | flatune pack tok/s | flatune pad tok/s | {heads} | flatune pack / fastest peer |")
    print("|---" * (4 + len(modes)) + "|")
    for s in summary:
        cells = " | ".join(f"{s[a.peer + '_' + m]:.0f} ({100 * s['padding_share'][m]:.0f}%)" for m in modes)
        print(f"| {s['variant']} | {s['flatune_pack']:.0f} | {s['flatune_pad']:.0f} | {cells} | "
              f"{s['ratio_vs_fastest_peer']:.2f}× ({s['fastest_peer']}) |")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    sys.exit(main())
