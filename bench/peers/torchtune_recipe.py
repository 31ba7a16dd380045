#!/usr/bin/env python3
"""torchtune's full_finetune_single_device recipe as a peer of `flatune bench train` (issue 21).

Runs the installed recipe unchanged (`tune run full_finetune_single_device --config FILE`) on the
CPU with a config written here: torchtune's llama2 builder at the given shape (vocab 32,000: the
recipe needs a tokenizer, and the Llama-2 SentencePiece model of shared/testdata is the one at
hand), weights from a seeded fresh model saved for FullModelTorchTuneCheckpointer, packed
text-completion data (English prose from /usr/share/common-licenses, so every row is --seq
tokens), torch.optim.AdamW lr 1e-4 without weight decay, clip_grad_norm 1.0, no compile, no
activation checkpointing, dtype fp32 or --bf16 (torchtune's bf16 is bf16 weights and optimizer
state, not autocast over fp32 weights as flatune's and transformers': a different, cheaper
numeric recipe, reported as such). The recipe logs tokens/s per step (DiskLogger); the figure here
is every step after the first: their tokens over their time. SAM: the recipe has no hook for a
second forward/backward in its step; adding one means rewriting its loop, so none is measured.
Prints and writes --json rows {"variant": "adamw", "tokens_per_s", "steps", "dtype"}.
Run in its own venv (bench/peers/setup-torchtune.sh says why):
  .venv-torchtune/bin/python bench/peers/torchtune_recipe.py --steps 5
"""
import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_args import add_shape_args  # noqa: E402
TESTDATA = os.environ.get("FLATUNE_TESTDATA", os.path.join(HERE, "..", "..", "..", "shared", "testdata"))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_shape_args(p, vocab=False)  # the vocabulary is the tokenizer's
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="timed steps (one more runs first as warm-up)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--json")
    a = p.parse_args()
    import torch
    import torchtune
    from torchtune.models.llama2 import llama2

    tokenizer = os.path.join(TESTDATA, "tokenizers", "llama2-spm", "tokenizer.model")
    if not os.path.exists(tokenizer):
        raise SystemExit(f"{tokenizer}: missing (the Llama-2 SentencePiece model of shared/testdata)")
    tmp = tempfile.mkdtemp(prefix="flatune-bench-torchtune-")
    try:
        ckpt, out, logs = (os.path.join(tmp, n) for n in ("ckpt", "out", "logs"))
        os.makedirs(ckpt)
        torch.manual_seed(0)
        model = llama2(vocab_size=32000, num_layers=a.layers, num_heads=a.heads, num_kv_heads=a.heads,
                       embed_dim=a.hidden, max_seq_len=a.seq, intermediate_dim=a.ffn)
        nparams = sum(t.numel() for t in model.parameters())
        torch.save(model.state_dict(), os.path.join(ckpt, "model.pt"))
        del model
        text = os.path.join(tmp, "text.txt")
        with open(text, "w") as f:  # one document per line; enough tokens for every packed row
            for _ in range(8):
                for path in sorted(glob.glob("/usr/share/common-licenses/*")):
                    if os.path.isfile(path):
                        f.write(" ".join(open(path, errors="replace").read().split()) + "\n")
        cfg = f"""
output_dir: {out}
model:
  _component_: torchtune.models.llama2.llama2
  vocab_size: 32000
  num_layers: {a.layers}
  num_heads: {a.heads}
  num_kv_heads: {a.heads}
  embed_dim: {a.hidden}
  max_seq_len: {a.seq}
  intermediate_dim: {a.ffn}
tokenizer:
  _component_: torchtune.models.llama2.llama2_tokenizer
  path: {tokenizer}
  max_seq_len: {a.seq}
checkpointer:
  _component_: torchtune.training.FullModelTorchTuneCheckpointer
  checkpoint_dir: {ckpt}
  checkpoint_files: [model.pt]
  model_type: LLAMA2
  output_dir: {out}
resume_from_checkpoint: False
dataset:
  _component_: torchtune.datasets.text_completion_dataset
  source: text
  data_files: {text}
  split: train
  column: text
  packed: True
seed: 0
shuffle: False
batch_size: {a.batch}
epochs: 1
max_steps_per_epoch: {a.steps + 1}
optimizer:
  _component_: torch.optim.AdamW
  lr: 1e-4
  weight_decay: 0.0
loss:
  _component_: torchtune.modules.loss.CEWithChunkedOutputLoss
gradient_accumulation_steps: 1
optimizer_in_bwd: False
clip_grad_norm: 1.0
compile: False
device: cpu
enable_activation_checkpointing: False
enable_activation_offloading: False
dtype: {"bf16" if a.bf16 else "fp32"}
metric_logger:
  _component_: torchtune.training.metric_logging.DiskLogger
  log_dir: {logs}
log_every_n_steps: 1
log_peak_memory_stats: False
profiler:
  _component_: torchtune.training.setup_torch_profiler
  enabled: False
"""
        cfg_path = os.path.join(tmp, "config.yaml")
        with open(cfg_path, "w") as f:
            f.write(cfg)
        env = dict(os.environ)
        if a.threads > 0:
            env["OMP_NUM_THREADS"] = str(a.threads)
        tune = os.path.join(os.path.dirname(sys.executable), "tune")
        r = subprocess.run([tune, "run", "full_finetune_single_device", "--config", cfg_path], env=env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"torchtune's recipe failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
        steps = {}
        for log in glob.glob(os.path.join(logs, "*.txt")):
            for line in open(log):
                m = re.match(r"Step (\d+) \| .*tokens_per_second_per_gpu:([0-9.eE+-]+)", line)
                if m:
                    steps[int(m.group(1))] = float(m.group(2))
        timed = [steps[s] for s in sorted(steps) if s > 1]
        if len(timed) < 1:
            raise SystemExit(f"no per-step tokens/s in torchtune's log ({logs}); it printed:\n{r.stderr[-2000:]}")
        # Equal tokens every step (packed rows), so tokens over time is the harmonic mean.
        tps = len(timed) / sum(1.0 / t for t in timed)
        print(f"torchtune {torchtune.__version__} full_finetune_single_device, torch {torch.__version__}, "
              f"{nparams / 1e6:.1f}M parameters, batch {a.batch} x {a.seq}, {'bf16 weights' if a.bf16 else 'fp32'}: "
              f"{tps:.0f} tokens/s over {len(timed)} steps")
        if a.json:
            with open(a.json, "w") as f:
                json.dump([{"variant": "adamw", "tokens_per_s": tps, "steps": len(timed),
                            "dtype": "bf16 weights" if a.bf16 else "fp32", "parameters": nparams}], f, indent=2)
                f.write("\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
