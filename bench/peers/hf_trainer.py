#!/usr/bin/env python3
"""transformers.Trainer as a peer of `flatune bench train` (issue 21).

The same fresh LlamaForCausalLM as bench/reference/train_step.py (shape flags, seed 0, sdpa
attention, fp32 weights), trained by transformers.Trainer as users run it on a CPU: use_cpu,
optim "adamw_torch" (torch.optim.AdamW), constant learning rate 1e-4, no weight decay,
max_grad_norm 1.0, --bf16 as TrainingArguments(bf16=True) (CPU autocast), no logging, saving or
evaluation. The data is one fixed batch of random token ids, repeated (labels = input ids), so the
data loader costs what it costs users with tokenized data in memory.

SAM is the usual two-pass recipe in Trainer.training_step: forward/backward, e = rho g/||g||
(rho 0.05, norm over all gradients), w += e, zero the gradients, forward/backward again, w -= e;
Trainer then clips and steps with the second gradient.

tokens/s counts --steps timed steps after one warm-up step (a callback reads the clock at each
step's begin and end), as `flatune bench train` does. Prints the table and writes --json rows
{"variant", "tokens_per_s", "step_time_vs_adamw"}.
Run with the project venv's python: .venv/bin/python bench/peers/hf_trainer.py --steps 5
"""
import argparse
import os
import sys
import tempfile
import time

for _k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "WANDB_DISABLED"):
    os.environ.setdefault(_k, "1")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from bench_args import add_shape_args  # noqa: E402
from peer_output import write_json  # noqa: E402
from train_step import fresh_model  # noqa: E402


class FixedBatch(torch.utils.data.Dataset):
    def __init__(self, ids, length):
        self.ids, self.length = ids, length

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        row = self.ids[i % self.ids.size(0)]
        return {"input_ids": row, "labels": row}


class Clock(TrainerCallback):
    """Wall time of the steps after the first (warm-up) one."""

    def __init__(self):
        self.start = None
        self.end = None

    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == 1 and self.start is None:
            self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.end = time.perf_counter()


class SamTrainer(Trainer):
    rho = 0.05

    def training_step(self, model, inputs, num_items_in_batch=None):
        model.train()
        inputs = self._prepare_inputs(inputs)
        with self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
        self.accelerator.backward(loss)
        params = [p for p in model.parameters() if p.grad is not None]
        with torch.no_grad():
            norm = torch.norm(torch.stack([p.grad.norm(2) for p in params]), 2)
            scale = self.rho / (norm + 1e-12)
            es = [p.grad * scale for p in params]
            torch._foreach_add_(params, es)
        model.zero_grad(set_to_none=False)
        with self.compute_loss_context_manager():
            second = self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
        self.accelerator.backward(second)
        with torch.no_grad():
            torch._foreach_sub_(params, es)
        return loss.detach()


def run(a, variant, ids):
    model = fresh_model(a)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, use_cpu=True, per_device_train_batch_size=a.batch, max_steps=a.steps + 1,
            learning_rate=1e-4, lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=1.0,
            optim="adamw_torch", bf16=a.bf16, logging_strategy="no", save_strategy="no", eval_strategy="no",
            report_to=[], dataloader_num_workers=0, disable_tqdm=True, seed=0)
        clock = Clock()
        cls = SamTrainer if variant == "sam" else Trainer
        trainer = cls(model=model, args=args, train_dataset=FixedBatch(ids, a.batch * (a.steps + 1)),
                      callbacks=[clock])
        trainer.train()
    return a.batch * a.seq * a.steps / (clock.end - clock.start)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_shape_args(p)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--variants", nargs="+", default=["none", "sam"], choices=["none", "sam"])
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--json")
    a = p.parse_args()
    a.attn = "sdpa"
    hf_logging.set_verbosity_error()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq), generator=torch.Generator().manual_seed(0))
    print(f"transformers.Trainer {transformers.__version__}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, batch {a.batch} x {a.seq}{', bf16' if a.bf16 else ''}")
    rows, adamw = [], 0.0
    for v in a.variants:
        tps = run(a, v, ids)
        adamw = tps if v == "none" else adamw
        name = "adamw" if v == "none" else v
        rows.append({"variant": name, "tokens_per_s": tps, "step_time_vs_adamw": adamw / tps if adamw else 0.0})
        print(f"{name:<8} {tps:>10.0f} tokens/s", flush=True)
    if a.json:
        write_json(a.json, rows)


if __name__ == "__main__":
    sys.exit(main())
