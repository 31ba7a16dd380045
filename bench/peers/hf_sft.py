#!/usr/bin/env python3
"""Supervised fine-tuning on variable-length instruction data: transformers.Trainer as users run
it, against which bench/sft.py times `flatune train` (issue 21).

The fixed-length benchmarks (bench/run.sh) give every program rows with no padding and a loss on
every token, where all of them run the same kernels. Instruction tuning is not like that: examples
differ in length and only the response counts in the loss. This script makes such a workload and
runs transformers' side of it.

--make DIR writes
  DIR/train.jsonl  Alpaca-format examples whose words are pieces of the tokenizer (one token each,
                   so lengths are set in tokens). Lengths are log-normal, chosen to resemble
                   Stanford Alpaca: instruction median 12 tokens, an input in 40% of the examples
                   (median 15), response median 45 with a long tail (sigma 0.9); with the Alpaca
                   prompt about 135 tokens an example, about half of them prompt. Under 1,024
                   tokens an example.
  DIR/model/       a fresh LlamaForCausalLM (the shape flags, vocabulary of the tokenizer, seed 0)
                   saved by transformers, with the tokenizer (shared/testdata's spm-bpe-32k, a
                   Llama-2-style 32,000-piece BPE) beside it; with --tokenizer spm, the Llama-2
                   SentencePiece model of shared/testdata's llama2-spm instead (torchtune's
                   tokenizer reads only that; transformers' modes need the tokenizer.json).
--mode runs transformers.Trainer for one epoch over DIR/train.jsonl, batch --batch examples,
  AdamW (adamw_torch, constant lr 1e-4, no decay, clipping 1.0), or SAM as in hf_trainer.py:
  pad      DataCollatorForSeq2Seq: each batch padded to its longest example (the documented recipe)
  group    the same with train_sampling_strategy "group_by_length" (batches of similar lengths)
  flatten  DataCollatorWithFlattening: the batch's examples in one row with restarting position
           ids, from which transformers builds a block-diagonal causal mask for sdpa (no padding)
  The prompt is the Alpaca template (flatune's `--template alpaca`), BOS first, EOS after the
  response, labels -100 over the prompt.
tokens/s: real (non-padding) tokens of the steps after the first (warm-up) one, over their wall
time. Prints one line and with --json writes {"mode", "variant", "tokens", "seconds",
"tokens_per_s", "padding_share", "steps", "epoch_tokens" (every step's)}.
Run with the project venv's python: .venv/bin/python bench/peers/hf_sft.py --make /tmp/sft
"""
import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time

for _k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "WANDB_DISABLED"):
    os.environ.setdefault(_k, "1")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_args import add_shape_args  # noqa: E402
from peer_output import sft_result  # noqa: E402
TOKENIZER = os.path.join(HERE, "..", "..", "..", "shared", "testdata", "tokenizers", "spm-bpe-32k")
SPM_TOKENIZER = os.path.join(HERE, "..", "..", "..", "shared", "testdata", "tokenizers", "llama2-spm")

# The Stanford Alpaca prompts, as flatune's `--template alpaca` renders them.
PROMPT_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}"
                "\n\n### Input:\n{input}\n\n### Response:")
PROMPT_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
                   "request.\n\n### Instruction:\n{instruction}\n\n### Response:")


def lognormal_length(rng, median, sigma, low, high):
    return max(low, min(high, int(round(median * math.exp(rng.gauss(0.0, sigma))))))


def make(d, a):
    import torch
    import transformers
    os.makedirs(os.path.join(d, "model"), exist_ok=True)
    if a.tokenizer == "spm":  # torchtune's Llama-2 tokenizer reads a SentencePiece model
        import sentencepiece
        shutil.copyfile(os.path.join(SPM_TOKENIZER, "tokenizer.model"), os.path.join(d, "model", "tokenizer.model"))
        sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(d, "model", "tokenizer.model"))
        pieces, vocab = [sp.id_to_piece(i) for i in range(sp.get_piece_size())], sp.get_piece_size()
    else:
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(os.path.join(TOKENIZER, f), os.path.join(d, "model", f))
        tok = transformers.AutoTokenizer.from_pretrained(os.path.join(d, "model"))
        pieces, vocab = list(tok.get_vocab()), len(tok)
    # Whole words of the vocabulary: one piece each, so a text of n words is about n tokens.
    words = sorted(p[1:] for p in pieces if p.startswith("\u2581") and p[1:].isalpha() and len(p) > 3)
    rng = random.Random(a.seed)

    def text(n):
        return " ".join(rng.choice(words) for _ in range(n))

    with open(os.path.join(d, "train.jsonl"), "w") as f:
        for _ in range(a.examples):
            ex = {"instruction": text(lognormal_length(rng, 12, 0.5, 3, 60)),
                  "input": text(lognormal_length(rng, 15, 0.8, 2, 200)) if rng.random() < 0.4 else "",
                  "output": text(lognormal_length(rng, 45, 0.9, 1, 700))}
            f.write(json.dumps(ex) + "\n")
    cfg = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=a.hidden, intermediate_size=a.ffn, num_hidden_layers=a.layers,
        num_attention_heads=a.heads, num_key_value_heads=a.heads, max_position_embeddings=2048, bos_token_id=1,
        eos_token_id=2, tie_word_embeddings=False, use_cache=False)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).to(torch.float32)
    model.save_pretrained(os.path.join(d, "model"), safe_serialization=True)
    print(f"{a.examples} examples, model {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters in {d}")


def tokenize(tok, path, max_length):
    rows = []
    with open(path) as f:
        for line in f:
            ex = json.loads(line)
            prompt = (PROMPT_INPUT if ex["input"] else PROMPT_NO_INPUT).format(**ex)
            p = [tok.bos_token_id] + tok(prompt, add_special_tokens=False)["input_ids"]
            r = tok(ex["output"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            ids = (p + r)[:max_length]
            labels = ([-100] * len(p) + r)[:max_length]
            rows.append({"input_ids": ids, "labels": labels})
    return rows


def run(a):
    import torch
    import transformers
    from transformers import (DataCollatorForSeq2Seq, DataCollatorWithFlattening, Trainer, TrainerCallback,
                              TrainingArguments)
    from transformers.utils import logging as hf_logging
    from hf_trainer import SamTrainer

    hf_logging.set_verbosity_error()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    model_dir = os.path.join(a.data, "model")
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    rows = tokenize(tok, os.path.join(a.data, "train.jsonl"), a.max_length)
    if a.mode == "flatten":
        collator = DataCollatorWithFlattening(return_position_ids=True)
    else:
        tok.pad_token = tok.unk_token  # Llama-2 has no pad token; the usual choice
        collator = DataCollatorForSeq2Seq(tok, padding="longest", label_pad_token_id=-100)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa",
                                                              dtype=torch.float32).train()

    class Clock(TrainerCallback):
        """Wall time and real tokens of the steps after the first (warm-up) one; Timed starts it and
        counts the tokens, each step's end moves its end."""

        def __init__(self):
            self.start = self.end = None
            self.tokens = self.padded = self.all_tokens = 0

        def on_step_end(self, args, state, control, **kw):
            if self.start is not None:
                self.end = time.perf_counter()

    clock = Clock()

    def count(inputs):
        if "attention_mask" in inputs:
            real = int(inputs["attention_mask"].sum())
        else:
            real = inputs["input_ids"].numel()
        return real, inputs["input_ids"].numel()

    base = SamTrainer if a.variant == "sam" else Trainer

    class Timed(base):
        def training_step(self, model, inputs, num_items_in_batch=None):
            if self.state.global_step == 1 and clock.start is None:
                clock.start = time.perf_counter()
            loss = super().training_step(model, inputs, num_items_in_batch=num_items_in_batch)
            real, total = count(inputs)
            clock.all_tokens += real
            if clock.start is not None:
                clock.tokens += real
                clock.padded += total
            return loss

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, use_cpu=True, per_device_train_batch_size=a.batch, num_train_epochs=1,
            learning_rate=1e-4, lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=1.0,
            optim="adamw_torch", bf16=a.bf16, logging_strategy="no", save_strategy="no", eval_strategy="no",
            report_to=[], dataloader_num_workers=0, disable_tqdm=True, seed=0,
            train_sampling_strategy="group_by_length" if a.mode == "group" else "random",
            remove_unused_columns=False)
        trainer = Timed(model=model, args=args, train_dataset=rows, data_collator=collator, callbacks=[clock])
        trainer.train()
        steps = trainer.state.global_step
    sft_result("transformers", mode=a.mode, variant=a.variant, tokens=clock.tokens, seconds=clock.end - clock.start,
               all_tokens=clock.padded, steps=steps, epoch_tokens=clock.all_tokens, json_path=a.json,
               transformers=transformers.__version__)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--make", metavar="DIR", help="write data and model to DIR, then stop")
    p.add_argument("--data", metavar="DIR", help="a folder --make wrote")
    p.add_argument("--mode", choices=["pad", "group", "flatten"], default="pad")
    p.add_argument("--variant", choices=["adamw", "sam"], default="adamw")
    p.add_argument("--examples", type=int, default=160)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer", choices=["json", "spm"], default="json",
                   help="--make: spm-bpe-32k's tokenizer.json (default) or llama2-spm's SentencePiece model")
    add_shape_args(p, vocab=False, seq=False)  # the vocabulary is the tokenizer's; lengths are the data's
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--json")
    a = p.parse_args()
    if a.make:
        make(a.make, a)
    elif a.data:
        run(a)
    else:
        p.error("give --make DIR or --data DIR")


if __name__ == "__main__":
    sys.exit(main())
