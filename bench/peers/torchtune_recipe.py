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
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_args import add_shape_args  # noqa: E402
from peer_output import write_json  # noqa: E402
from torchtune_common import recipe_config, run_recipe, step_rates  # noqa: E402
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
        model_args = dict(vocab_size=32000, num_layers=a.layers, num_heads=a.heads, num_kv_heads=a.heads,
                          embed_dim=a.hidden, max_seq_len=a.seq, intermediate_dim=a.ffn)
        torch.manual_seed(0)
        model = llama2(**model_args)
        nparams = sum(t.numel() for t in model.parameters())
        torch.save(model.state_dict(), os.path.join(ckpt, "model.pt"))
        del model
        text = os.path.join(tmp, "text.txt")
        with open(text, "w") as f:  # one document per line; enough tokens for every packed row
            for _ in range(8):
                for path in sorted(glob.glob("/usr/share/common-licenses/*")):
                    if os.path.isfile(path):
                        f.write(" ".join(open(path, errors="replace").read().split()) + "\n")
        checkpointer = (f"  _component_: torchtune.training.FullModelTorchTuneCheckpointer\n"
                        f"  checkpoint_dir: {ckpt}\n  checkpoint_files: [model.pt]\n  model_type: LLAMA2\n"
                        f"  output_dir: {out}\n")
        dataset = (f"  _component_: torchtune.datasets.text_completion_dataset\n  source: text\n"
                   f"  data_files: {text}\n  split: train\n  column: text\n  packed: True\n")
        cfg = recipe_config(out=out, logs=logs, model=model_args, tokenizer=tokenizer, max_seq_len=a.seq,
                            checkpointer=checkpointer, dataset=dataset, batch=a.batch, bf16=a.bf16,
                            max_steps=a.steps + 1)
        r = run_recipe(cfg, tmp, a.threads)
        steps = step_rates(logs, r.stderr)
        timed = [steps[s] for s in sorted(steps) if s > 1]
        # Equal tokens every step (packed rows), so tokens over time is the harmonic mean.
        tps = len(timed) / sum(1.0 / t for t in timed)
        print(f"torchtune {torchtune.__version__} full_finetune_single_device, torch {torch.__version__}, "
              f"{nparams / 1e6:.1f}M parameters, batch {a.batch} x {a.seq}, {'bf16 weights' if a.bf16 else 'fp32'}: "
              f"{tps:.0f} tokens/s over {len(timed)} steps")
        if a.json:
            write_json(a.json, [{"variant": "adamw", "tokens_per_s": tps, "steps": len(timed),
                                 "dtype": "bf16 weights" if a.bf16 else "fp32", "parameters": nparams}])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
