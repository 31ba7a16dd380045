#!/usr/bin/env python3
"""Instruction tuning with torchtune's full_finetune_single_device recipe, unchanged, as the peer
bench/sft.py --peer torchtune times `flatune train` against (issue 21).

Reads a folder `bench/peers/hf_sft.py --make DIR --tokenizer spm` wrote (Alpaca-format
train.jsonl, a fresh Llama saved by transformers with the Llama-2 SentencePiece model beside it,
which torchtune's llama2_tokenizer reads) and runs one epoch of the recipe on it: the weights
through FullModelHFCheckpointer, torchtune's alpaca_dataset over the file (its Alpaca prompt, BOS
and EOS, train_on_input False: loss on the responses), AdamW lr 1e-4 without decay, clipping 1.0,
fp32 or --bf16 (torchtune's bf16: bf16 weights and optimizer state, not autocast):
  pack  packed: True, the examples in order in packs of --max-length tokens (padding at a pack's
        end; a block-causal mask, which off CUDA is a dense [batch, T, T] mask for sdpa), batch 1
        pack, about as many examples a step as --batch 8 at Alpaca's lengths
  pad   unpacked, batch --batch examples padded to the longest (padded_collate_sft)
tokens/s: real (not padding) tokens of the steps after the first over those steps' wall time. The
recipe logs each step's label tokens over its wall time; the script rebuilds the same batches
(same builder, same order: shuffle off) to know each step's label and real tokens, and so each
step's time. Prints one line; --json writes {"mode", "variant", "tokens", "seconds",
"tokens_per_s", "padding_share", "steps", "epoch_tokens"} as hf_sft.py does.
Run in .venv-torchtune: .venv-torchtune/bin/python bench/peers/torchtune_sft.py --data DIR --mode pack
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from peer_output import sft_result  # noqa: E402
from torchtune_common import recipe_config, run_recipe, step_rates  # noqa: E402


def dataset_yaml(train, packed):
    return (f"  _component_: torchtune.datasets.alpaca_dataset\n  source: json\n  data_files: {train}\n"
            f"  split: train\n  train_on_input: False\n  packed: {packed}\n")


def batches(train, tokenizer_path, max_length, packed, batch):
    """(label tokens, real tokens, all tokens) of each batch the recipe steps through, in order."""
    from torch.utils.data import DataLoader
    from torchtune.data import padded_collate_packed, padded_collate_sft
    from torchtune.datasets import alpaca_dataset
    from torchtune.models.llama2 import llama2_tokenizer

    tok = llama2_tokenizer(tokenizer_path, max_seq_len=max_length, prompt_template=None)  # as recipe_config
    ds = alpaca_dataset(tok, source="json", data_files=train, split="train", train_on_input=False, packed=packed)
    collate = padded_collate_packed if packed else (
        lambda b: padded_collate_sft(b, padding_idx=tok.pad_id, ignore_idx=-100))
    counts = []
    for b in DataLoader(ds, batch_size=batch, shuffle=False, collate_fn=collate):
        tokens = b["tokens"]
        # Pads carry the tokenizer's pad id, which no text of the generated file produces.
        counts.append((int((b["labels"] != -100).sum()), int((tokens != tok.pad_id).sum()), tokens.numel()))
    return counts


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, metavar="DIR", help="a folder hf_sft.py --make --tokenizer spm wrote")
    p.add_argument("--mode", choices=["pack", "pad"], default="pack")
    p.add_argument("--batch", type=int, default=8, help="examples a step when not packed")
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--json")
    a = p.parse_args()
    import torchtune

    model_dir = os.path.join(a.data, "model")
    tokenizer = os.path.join(model_dir, "tokenizer.model")
    if not os.path.exists(tokenizer):
        raise SystemExit(f"{tokenizer}: missing (make the folder with hf_sft.py --make DIR --tokenizer spm)")
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    train = os.path.join(a.data, "train.jsonl")
    packed = a.mode == "pack"
    batch = 1 if packed else a.batch
    model_args = dict(vocab_size=cfg["vocab_size"], num_layers=cfg["num_hidden_layers"],
                      num_heads=cfg["num_attention_heads"], num_kv_heads=cfg["num_key_value_heads"],
                      embed_dim=cfg["hidden_size"], max_seq_len=a.max_length, intermediate_dim=cfg["intermediate_size"],
                      norm_eps=cfg["rms_norm_eps"])
    tmp = tempfile.mkdtemp(prefix="flatune-bench-torchtune-sft-")
    try:
        out, logs = os.path.join(tmp, "out"), os.path.join(tmp, "logs")
        checkpointer = (f"  _component_: torchtune.training.FullModelHFCheckpointer\n  checkpoint_dir: {model_dir}\n"
                        f"  checkpoint_files: [model.safetensors]\n  model_type: LLAMA2\n  output_dir: {out}\n")
        text = recipe_config(out=out, logs=logs, model=model_args, tokenizer=tokenizer, max_seq_len=a.max_length,
                             checkpointer=checkpointer, dataset=dataset_yaml(train, packed), batch=batch, bf16=a.bf16)
        r = run_recipe(text, tmp, a.threads)
        rates = step_rates(logs, r.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    counts = batches(train, tokenizer, a.max_length, packed, batch)
    if len(counts) != len(rates):
        raise SystemExit(f"torchtune logged {len(rates)} steps, the rebuilt epoch has {len(counts)} batches")
    timed = [(counts[s - 1], rates[s]) for s in sorted(rates) if s > 1]
    seconds = sum(c[0] / rate for c, rate in timed)
    tokens = sum(c[1] for c, _ in timed)
    sft_result("torchtune", mode=a.mode, variant="adamw", tokens=tokens, seconds=seconds,
               all_tokens=sum(c[2] for c, _ in timed), steps=len(counts), epoch_tokens=sum(c[1] for c in counts),
               json_path=a.json, torchtune=torchtune.__version__, dtype="bf16 weights" if a.bf16 else "fp32")


if __name__ == "__main__":
    sys.exit(main())
