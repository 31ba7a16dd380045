#!/usr/bin/env python3
"""Multiple-choice evaluation: lm-evaluation-harness's `hf` model against `flatune eval` (issue 21).

One random Llama saved by transformers (fp32, byte-level tokenizer bytes-320 of shared/testdata,
so vocab 320; --hidden/--layers/--ffn/--heads set the rest, default 256 x 8 layers, about 6M
parameters) and two generated suites: ARC-style questions and HellaSwag-style endings
(tests/parity/test_lm_eval.py's generators; lm-eval reads them through its installed
arc_easy/hellaswag definitions, flatune through its importers). Timed: lm_eval.simple_evaluate
(model "hf", device cpu, at each --lm-batch) and `flatune import` once + `flatune eval` (at each
--flatune-batch), wall clock of the evaluation call (the import apart). Checked: acc and
acc_norm equal per suite, or the script says where they differ.
Prints items/s and the ratio; --json FILE writes them.
Run: .venv/bin/python bench/peers/lm_eval_mc.py [--items 200]
"""
import argparse
import json
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "parity"))
for _k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_k, "1")

import parity_common as pc  # noqa: E402
import test_lm_eval as lt  # noqa: E402


def make_model(d, a):
    import torch
    import transformers
    src = pc.testdata("models", "llama-mha")
    cfg = transformers.LlamaConfig(
        vocab_size=320, hidden_size=a.hidden, intermediate_size=a.ffn, num_hidden_layers=a.layers,
        num_attention_heads=a.heads, num_key_value_heads=a.heads, max_position_embeddings=2048, bos_token_id=1,
        eos_token_id=2, tie_word_embeddings=False, initializer_range=0.1)
    torch.manual_seed(1)
    model = transformers.LlamaForCausalLM(cfg).to(torch.float32)
    model.save_pretrained(d, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(src, f), os.path.join(d, f))
    with open(os.path.join(d, "tokenizer_config.json")) as f:
        tc = json.load(f)
    tc["model_max_length"] = 2048
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(tc, f)
    return sum(p.numel() for p in model.parameters())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=200, help="items per suite")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ffn", type=int, default=688)
    p.add_argument("--lm-batch", type=int, nargs="+", default=[1, 16], help="lm-eval batch sizes to time")
    p.add_argument("--flatune-batch", type=int, nargs="+", default=[4, 16], help="flatune eval --batch-size values")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json")
    a = p.parse_args()
    import lm_eval
    import torch
    from lm_eval.tasks import TaskManager
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    threads = torch.get_num_threads()
    tmp = pc.make_temp_dir("bench-lm-eval")
    model_dir, data, raw, tasks = (os.path.join(tmp, n) for n in ("model", "data", "raw", "tasks"))
    for d in (data, raw, tasks):
        os.makedirs(d)
    nparams = make_model(model_dir, a)
    g = lt.Gen(1234)
    off = lt.lm_eval_tasks_dir()
    cache = os.path.join(tmp, "hf-datasets")
    suites = []  # (lm task, flatune suite, raw file, flatune task)
    hf, ai2 = lt.make_arc(g, a.items, "arc")
    pc.write_jsonl(os.path.join(data, "bench_arc.jsonl"), hf)
    pc.write_jsonl(os.path.join(raw, "ARC-Easy-Test.jsonl"), ai2)
    suites.append(("bench_arc", "arc", os.path.join(raw, "ARC-Easy-Test.jsonl"), "arc_easy", "arc/arc_easy.yaml"))
    hs = lt.make_hellaswag(g, a.items)
    pc.write_jsonl(os.path.join(data, "bench_hellaswag.jsonl"), hs)
    pc.write_jsonl(os.path.join(raw, "hellaswag_val.jsonl"), hs)
    suites.append(("bench_hellaswag", "hellaswag", os.path.join(raw, "hellaswag_val.jsonl"), "hellaswag",
                   "hellaswag/hellaswag.yaml"))
    for task, _, _, _, official in suites:
        with open(os.path.join(tasks, task + ".yaml"), "w") as f:
            f.write(lt.task_yaml(task, os.path.join(off, official), {"test": os.path.join(data, task + ".jsonl")}, cache))
    items = a.items * len(suites)
    print(f"model {nparams / 1e6:.1f}M parameters (vocab 320, bytes), {items} items ({a.items} ARC-style, "
          f"{a.items} HellaSwag-style), {threads} threads; lm_eval {lm_eval.__version__}, torch {torch.__version__}")

    rows, lm_scores = [], None
    tm = TaskManager(include_path=tasks, include_defaults=False)
    lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=["bench_arc"],
                            device="cpu", batch_size=1, limit=4, task_manager=tm, bootstrap_iters=0)  # warm-up
    for b in a.lm_batch:
        t0 = time.perf_counter()
        res = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32",
                                      tasks=[s[0] for s in suites], device="cpu", batch_size=b, task_manager=tm,
                                      bootstrap_iters=0)
        secs = time.perf_counter() - t0
        lm_scores = {t: {m: res["results"][t][f"{m},none"] for m in ("acc", "acc_norm")} for t, *_ in suites}
        rows.append({"program": "lm-eval hf", "batch": b, "seconds": secs, "items_per_s": items / secs})
        print(f"lm-eval hf  batch {b:>3}: {items / secs:8.1f} items/s ({secs:.1f} s, model load included)", flush=True)

    files = {}
    for task, suite, src, name, _ in suites:
        files[task] = os.path.join(tmp, name + ".jsonl")
        pc.run_flatune("import", "--suite", suite, "--input", src, "--out", files[task])
    mismatches = []
    for b in a.flatune_batch:
        out = os.path.join(tmp, f"flatune-{b}")
        t0 = time.perf_counter()
        pc.run_flatune("eval", "--model", model_dir, "--tasks", *files.values(), "--batch-size", b, "--threads", threads,
                       "--out", out)
        secs = time.perf_counter() - t0
        rows.append({"program": "flatune eval", "batch": b, "seconds": secs, "items_per_s": items / secs})
        print(f"flatune     batch {b:>3}: {items / secs:8.1f} items/s ({secs:.1f} s, model load included)", flush=True)
        for task, _, _, name, _ in suites:
            with open(os.path.join(out, "eval", name + ".json")) as f:
                ours = json.load(f)["metrics"]
            for m in ("acc", "acc_norm"):
                if abs(ours[m] - lm_scores[task][m]) > 1e-12:
                    mismatches.append(f"{task} {m} batch {b}: flatune {ours[m]} vs lm-eval {lm_scores[task][m]}")
    best_lm = max(r["items_per_s"] for r in rows if r["program"] == "lm-eval hf")
    best_ft = max(r["items_per_s"] for r in rows if r["program"] == "flatune eval")
    print(f"flatune / lm-eval (best of each): {best_ft / best_lm:.2f}x; "
          + ("same acc and acc_norm on every suite" if not mismatches else "DIFFERENT: " + "; ".join(mismatches)))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rows": rows, "ratio_best": best_ft / best_lm, "lm_eval_scores": lm_scores,
                       "mismatches": mismatches, "items": items, "lm_eval_version": lm_eval.__version__, "parameters": nparams, "threads": threads}, f, indent=1)
    if os.environ.get("PARITY_KEEP") != "1":
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
