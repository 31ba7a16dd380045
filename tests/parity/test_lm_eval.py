"""flatune's multiple-choice evaluation judged by the real lm-evaluation-harness.

A tiny random Llama made with transformers' own classes (fp32, safetensors, the bytes-320
tokenizer of shared/testdata) is scored on small generated suites by lm_eval.simple_evaluate
(model "hf") and by `flatune import` + `flatune eval`. Each lm-eval task is a local YAML that
`include:`s the installed official definition (arc_easy, hellaswag with its utils.process_docs,
mmlu's default template, winogrande's preprocess functions, race's preprocess, piqa, siqa,
super_glue boolq/copa, glue rte, openbookqa, truthfulqa mc1/mc2) and overrides only where the data
comes from, so the prompts are whatever the installed lm-eval builds. flatune reads the same items
in the layouts its importers take (AI2 ARC jsonl, HellaSwag jsonl, MMLU csv dev/test folders,
WinoGrande jsonl, EleutherAI/race jsonl with Python-literal problems, the Hugging Face jsonl of
the others).

Asserted per task: acc (and acc_norm where lm-eval reports it) equal exactly, per item and in the
aggregate; every choice's log-likelihood within 1e-4 of lm-eval's logged `resps`
(== `filtered_resps`), items matched by doc id; TruthfulQA MC2's per-item true-answer mass within
1e-4. Few-shot: MMLU 5-shot from a dev split (lm-eval's first_n sampler; flatune import --shots
5 --dev) and ARC 3-shot drawn from the evaluated split (lm-eval's default sampler with
fewshot_split = test_split and fewshot_random_seed; flatune eval --shots 3 --seed).

Run by hand: .venv/bin/python tests/parity/test_lm_eval.py  (PARITY_KEEP=1 keeps the folder).
"""
import csv
import json
import math
import os
import random
import shutil
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parity_common as pc  # noqa: E402

SEED = 1234          # data, model weights, lm-eval's random/numpy/torch seeds
FEWSHOT_SEED = 4321  # lm-eval's fewshot_random_seed = flatune eval --seed
TOL = 1e-4
MMLU_SUBJECTS = ["abstract_algebra", "world_religions"]
ARC_SHOTS = 3

SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ber", "dan", "fel", "gor", "hin", "jus",
             "mor", "pel", "quo", "ras", "sen", "tor", "ung", "vak", "wel", "xer", "yom", "zal", "th", "str"]


class Gen:
    """Seeded random text: pseudo-words, sentences of a length drawn from a range."""

    def __init__(self, seed):
        self.r = random.Random(seed)

    def word(self):
        w = "".join(self.r.choice(SYLLABLES) for _ in range(self.r.randint(1, 3)))
        return w + "'s" if self.r.random() < 0.03 else w

    def words(self, lo, hi):
        return " ".join(self.word() for _ in range(self.r.randint(lo, hi)))

    def sentence(self, lo, hi, end="."):
        s = self.words(lo, hi)
        return s[:1].upper() + s[1:] + end


# ------------------------------------------------------------------ suites: rows for lm-eval, files for flatune
# Each maker returns (rows lm-eval reads as JSON, {file name: rows or text} flatune imports).

def make_arc(g, n, prefix, q_words=40):
    """3-5 choices, labels A-E or 1-5; lm-eval reads the Hugging Face layout, flatune AI2's."""
    hf, ai2 = [], []
    for i in range(n):
        k = g.r.choice([3, 4, 4, 4, 5])
        labels = [str(c + 1) for c in range(k)] if g.r.random() < 0.25 else ["ABCDE"[c] for c in range(k)]
        texts = [g.words(1, 4) for _ in range(k)]
        question = g.sentence(3, q_words, end="?")
        key = g.r.choice(labels)
        qid = f"{prefix}-{i}"
        hf.append({"id": qid, "question": question, "choices": {"text": texts, "label": labels}, "answerKey": key})
        ai2.append({"id": qid, "question": {"stem": question, "choices": [{"text": t, "label": l} for t, l in zip(texts, labels)]},
                    "answerKey": key})
    return hf, ai2


def make_hellaswag(g, n):
    rows = []
    for i in range(n):
        ctx_a = g.sentence(2, 30)
        r = g.r.random()
        if r < 0.2:
            ctx_a += " [title] " + g.sentence(2, 8)          # WikiHow artifacts
        elif r < 0.35:
            ctx_a = "[header] " + ctx_a + "  " + g.words(1, 4)
        ctx_b = "" if g.r.random() < 0.15 else g.words(1, 6)
        if g.r.random() < 0.3:
            ctx_b = ctx_b.upper()                              # capitalize() lower-cases the rest
        endings = []
        for _ in range(4):
            e = g.sentence(1, 6)
            if g.r.random() < 0.2:
                e += " [substeps] " + g.words(1, 2) + "."
            if g.r.random() < 0.1:
                e = " " + e + "  " + g.words(1, 2)
            endings.append(e)
        rows.append({"ind": i, "activity_label": g.sentence(1, 3, end=""), "ctx_a": ctx_a, "ctx_b": ctx_b,
                     "endings": endings, "label": str(g.r.randrange(4)), "split": "val", "source_id": f"src~{i}"})
    return rows


def make_mmlu(g, subject, n):
    rows = []
    for _ in range(n):
        q = g.sentence(3, 14, end="?")
        r = g.r.random()
        if r < 0.15:
            q = "  " + q + " "                                   # question.strip()
        elif r < 0.3:
            q = g.sentence(2, 8) + "\n" + q                       # a newline inside a quoted csv field
        elif r < 0.4:
            q = q.replace(" ", ', "', 1) + '"'                    # commas and quotes in a csv field
        rows.append({"question": q, "subject": subject, "choices": [g.words(1, 4) for _ in range(4)], "answer": g.r.randrange(4)})
    return rows


def make_winogrande(g, n):
    return [{"qID": f"wg-{i}", "sentence": g.sentence(2, 20, end="") + " _ " + g.words(1, 6) + ".",
             "option1": g.words(1, 2), "option2": g.words(1, 2), "answer": g.r.choice(["1", "2"])} for i in range(n)]


def make_race(g, n):
    """EleutherAI/race rows: "problems" is Python's str() of the list; some questions are cloze
    ("...  _  .") and some texts hold apostrophes, so str() switches quotes."""
    rows = []
    for i in range(n):
        problems = []
        for k in range(2 if i == 0 else g.r.randint(1, 4)):  # doc 0: an answered cloze problem for sure
            cloze = (i, k) == (0, 0) or ((i, k) != (0, 1) and g.r.random() < 0.4)
            q = g.sentence(3, 12, end="") + "  _  ." if cloze else g.sentence(3, 12, end="?")
            problems.append({"answer": g.r.choice("ABCD"), "options": [g.words(1, 3) for _ in range(4)], "question": q})
        rows.append({"example_id": f"high{i}.txt", "article": " ".join(g.sentence(4, 15) for _ in range(g.r.randint(1, 4))),
                     "problems": str(problems)})
    return rows


def make_piqa(g, n):
    return [{"goal": g.sentence(3, 20), "sol1": g.sentence(1, 6), "sol2": g.sentence(1, 6), "label": g.r.randrange(2)}
            for _ in range(n)]


def make_siqa(g, n):
    return [{"context": g.sentence(4, 25), "question": g.sentence(3, 8, end="?"), "answerA": g.words(1, 4),
             "answerB": g.words(1, 4), "answerC": g.words(1, 4), "label": str(g.r.randint(1, 3))} for _ in range(n)]


def make_boolq(g, n):
    return [{"passage": g.sentence(10, 60), "question": g.words(3, 10), "label": g.r.randrange(2), "idx": i} for i in range(n)]


def make_copa(g, n):
    return [{"premise": g.sentence(3, 12), "choice1": g.sentence(1, 5), "choice2": g.sentence(1, 5),
             "question": g.r.choice(["cause", "effect"]), "label": g.r.randrange(2), "idx": i} for i in range(n)]


def make_rte(g, n):
    return [{"sentence1": g.sentence(5, 40), "sentence2": g.sentence(3, 12), "label": g.r.randrange(2), "idx": i} for i in range(n)]


def make_openbookqa(g, n):
    rows = []
    for i in range(n):
        key = g.r.choice("ABCD")
        rows.append({"id": f"obqa-{i}", "question_stem": g.sentence(3, 20, end=""),
                     "choices": {"text": [g.words(1, 4) for _ in range(4)], "label": list("ABCD")},
                     "answerKey": (" " + key) if g.r.random() < 0.2 else key})  # the template lstrips the key
    return rows


def make_truthfulqa(g, n):
    rows = []
    for _ in range(n):
        def targets(n_true, n_all):
            return {"choices": [g.sentence(1, 4) for _ in range(n_all)], "labels": [1] * n_true + [0] * (n_all - n_true)}
        rows.append({"question": g.sentence(3, 15, end="?"), "mc1_targets": targets(1, g.r.randint(2, 5)),
                     "mc2_targets": targets(g.r.randint(1, 3), g.r.randint(4, 7))})
    return rows


# ------------------------------------------------------------------ lm-eval task YAMLs

def lm_eval_tasks_dir():
    import lm_eval
    return os.path.join(os.path.dirname(lm_eval.__file__), "tasks")


def task_yaml(name, include, data_files, cache_dir, extra=""):
    """A task that includes an installed official definition and reads local JSON files."""
    files = "\n".join(f"    {split}: {json.dumps(path)}" for split, path in data_files.items())
    return (f"include: {json.dumps(include)}\n"
            f"task: {name}\n"
            f"tag: []\n"
            f"dataset_path: json\n"
            f"dataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n{files}\n  cache_dir: {json.dumps(cache_dir)}\n"
            f"training_split: null\nvalidation_split: null\ntest_split: test\n" + extra)


# ------------------------------------------------------------------ the test

class LmEvalParity(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.binary = pc.flatune_binary()
        try:
            import lm_eval  # noqa: F401
            import torch
            import transformers
        except ImportError as e:
            raise unittest.SkipTest(f"needs lm_eval, torch and transformers in this Python: {e}")
        cls.tmp = pc.make_temp_dir("lm-eval")
        cls.timings = {}
        cls.reports = {}
        cls.make_model(torch, transformers)
        cls.make_data()
        cls.run_lm_eval()
        cls.run_flatune()

    @classmethod
    def tearDownClass(cls):
        for name, r in cls.reports.items():
            print(f"[parity] {name}: {json.dumps(r)}", file=sys.stderr)
        print(f"[parity] timings (s): {json.dumps({k: round(v, 1) for k, v in cls.timings.items()})}", file=sys.stderr)

    # -- a tiny random Llama, saved by transformers, with the bytes-320 tokenizer
    @classmethod
    def make_model(cls, torch, transformers):
        cls.model_dir = os.path.join(cls.tmp, "model")
        src = pc.testdata("models", "llama-mha")
        cfg = transformers.LlamaConfig(
            vocab_size=320, hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=2048, rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2,
            tie_word_embeddings=False, initializer_range=0.1)
        torch.manual_seed(SEED)
        model = transformers.LlamaForCausalLM(cfg).to(torch.float32)
        model.save_pretrained(cls.model_dir, safe_serialization=True)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(src, f), os.path.join(cls.model_dir, f))
        # The copied tokenizer_config says model_max_length 128 (the tiny test models' window);
        # this model's is 2048, so that no prompt here is truncated.
        cfg_path = os.path.join(cls.model_dir, "tokenizer_config.json")
        with open(cfg_path) as f:
            tc = json.load(f)
        tc["model_max_length"] = cfg.max_position_embeddings
        with open(cfg_path, "w") as f:
            json.dump(tc, f, indent=1)

    @classmethod
    def make_data(cls):
        """Writes every suite for lm-eval (JSON + YAML) and for flatune (its importers' layouts);
        cls.suites: lm-eval task -> (flatune suite, input path, flatune task name, import args)."""
        d = os.path.join(cls.tmp, "data")      # lm-eval's JSON
        raw = os.path.join(cls.tmp, "raw")     # flatune importers' layouts
        tasks = cls.task_dir = os.path.join(cls.tmp, "tasks")
        for p in (d, raw, tasks, os.path.join(raw, "mmlu", "test"), os.path.join(raw, "mmlu", "dev")):
            os.makedirs(p)
        cache = os.path.join(cls.tmp, "hf-datasets")
        off = lm_eval_tasks_dir()
        g = Gen(SEED)
        yamls, cls.suites = {}, {}

        def add(task, official, lm_rows, suite, raw_name, raw_rows=None, extra="", flatune_name=None):
            path = os.path.join(d, task + ".jsonl")
            pc.write_jsonl(path, lm_rows)
            yamls[task] = task_yaml(task, os.path.join(off, official), {"test": path}, cache, extra)
            raw_path = os.path.join(raw, raw_name)
            pc.write_jsonl(raw_path, lm_rows if raw_rows is None else raw_rows)
            cls.suites[task] = (suite, raw_path, flatune_name or task, [])

        hf, ai2 = make_arc(g, 40, "arc")
        add("parity_arc", "arc/arc_easy.yaml", hf, "arc", "ARC-Easy-Test.jsonl", ai2)
        hf, ai2 = make_arc(g, 30, "arcfs", q_words=15)
        add("parity_arc_fewshot", "arc/arc_easy.yaml", hf, "arc", "ARC-Fewshot-Test.jsonl", ai2,
            extra=f"num_fewshot: {ARC_SHOTS}\nfewshot_split: test\n")
        add("parity_hellaswag", "hellaswag/hellaswag.yaml", make_hellaswag(g, 40), "hellaswag", "hellaswag_val.jsonl")
        add("parity_winogrande", "winogrande/default.yaml", make_winogrande(g, 40), "winogrande", "winogrande_dev.jsonl")
        add("parity_race", "race/race.yaml", make_race(g, 24), "race", "race_high_test.jsonl")
        add("parity_piqa", "piqa/piqa.yaml", make_piqa(g, 24), "piqa", "piqa_valid.jsonl")
        add("parity_siqa", "siqa/siqa.yaml", make_siqa(g, 24), "siqa", "siqa_dev.jsonl")
        add("parity_boolq", "super_glue/boolq/default.yaml", make_boolq(g, 24), "boolq", "boolq_val.jsonl")
        add("parity_copa", "super_glue/copa/default.yaml", make_copa(g, 24), "copa", "copa_val.jsonl")
        add("parity_rte", "glue/rte/default.yaml", make_rte(g, 24), "rte", "rte_validation.jsonl")
        add("parity_openbookqa", "openbookqa/openbookqa.yaml", make_openbookqa(g, 24), "openbookqa", "obqa_test.jsonl")
        tqa = make_truthfulqa(g, 24)
        add("parity_truthfulqa_mc1", "truthfulqa/truthfulqa_mc1.yaml", tqa, "truthfulqa_mc1", "tqa_mc1.jsonl")
        add("parity_truthfulqa_mc2", "truthfulqa/truthfulqa_mc2.yaml", tqa, "truthfulqa_mc2", "tqa_mc2.jsonl")

        # MMLU: one lm-eval task per subject (test + dev splits, the official description, 5
        # shots first_n from dev); flatune imports the csv folders into one task file.
        for subject in MMLU_SUBJECTS:
            test, dev = make_mmlu(g, subject, 20), make_mmlu(g, subject, 7)  # dev > 5: first_n must take the first 5
            files = {}
            for split, rows in (("test", test), ("dev", dev)):
                files[split] = os.path.join(d, f"mmlu_{subject}_{split}.jsonl")
                pc.write_jsonl(files[split], rows)
                with open(os.path.join(raw, "mmlu", split, f"{subject}_{split}.csv"), "w", newline="", encoding="utf-8") as f:
                    w = csv.writer(f)
                    for r in rows:
                        w.writerow([r["question"]] + r["choices"] + ["ABCD"[r["answer"]]])
            with open(os.path.join(off, "mmlu", "default", f"mmlu_{subject}.yaml")) as f:
                official = f.read()
            keep = [line for line in official.splitlines(True)
                    if not line.startswith(('"include"', '"task"', '"tag"', '"dataset_name"', '"task_alias"'))]
            task = f"parity_mmlu_{subject}"
            yamls[task] = task_yaml(task, os.path.join(off, "mmlu", "default", "_default_template_yaml"), files, cache,
                                    "".join(keep) + "\nnum_fewshot: 5\n")
        cls.suites["mmlu"] = ("mmlu", os.path.join(raw, "mmlu", "test"), "mmlu", ["--shots", "5", "--dev", os.path.join(raw, "mmlu", "dev")])

        for name, text in yamls.items():
            with open(os.path.join(tasks, name + ".yaml"), "w") as f:
                f.write(text)
        cls.lm_tasks = sorted(yamls)

    @classmethod
    def run_lm_eval(cls):
        import lm_eval
        from lm_eval.tasks import TaskManager
        t0 = time.time()
        tm = TaskManager(include_path=cls.task_dir, include_defaults=False)
        cls.lm = lm_eval.simple_evaluate(
            model="hf", model_args=f"pretrained={cls.model_dir},dtype=float32", tasks=cls.lm_tasks, device="cpu",
            batch_size=1, log_samples=True, task_manager=tm, random_seed=SEED, numpy_random_seed=SEED,
            torch_random_seed=SEED, fewshot_random_seed=FEWSHOT_SEED, bootstrap_iters=0)
        cls.timings["lm_eval"] = time.time() - t0

    @classmethod
    def run_flatune(cls):
        t0 = time.time()
        tf = os.path.join(cls.tmp, "flatune-tasks")
        os.makedirs(tf)
        cls.task_files = {}
        for suite, src, name, extra in cls.suites.values():
            out = os.path.join(tf, name + ".jsonl")
            pc.run_flatune("import", "--suite", suite, "--input", src, "--out", out, *extra)
            cls.task_files[name] = out
        cls.out = os.path.join(cls.tmp, "flatune-out")
        zero = [f for n, f in sorted(cls.task_files.items()) if n != "parity_arc_fewshot"]
        pc.run_flatune("eval", "--model", cls.model_dir, "--tasks", *zero, "--out", cls.out)
        pc.run_flatune("eval", "--model", cls.model_dir, "--tasks", cls.task_files["parity_arc_fewshot"],
                       "--shots", ARC_SHOTS, "--seed", FEWSHOT_SEED, "--out", cls.out)
        cls.timings["flatune"] = time.time() - t0

    # -- comparing
    def flatune_items(self, name):
        return pc.read_jsonl(os.path.join(self.out, "eval", name + ".items.jsonl"))

    def flatune_metric(self, name, metric):
        with open(os.path.join(self.out, "eval", name + ".json")) as f:
            return json.load(f)["metrics"][metric]

    def compare(self, lm_task, items, metrics, mass=False):
        """flatune's per-item records against lm-eval's samples of docs 0..n-1, in order.
        metrics: the 0/1 metrics lm-eval reports for the task; mass: TruthfulQA MC2's acc."""
        samples = sorted(self.lm["samples"][lm_task], key=lambda s: int(s["doc_id"]))
        self.assertEqual([int(s["doc_id"]) for s in samples], list(range(len(samples))), f"{lm_task}: doc ids")
        self.assertEqual(len(samples), len(items), f"{lm_task}: lm-eval scored {len(samples)} docs, flatune {len(items)} items")
        worst, worst_at, worst_mass, gap = 0.0, None, 0.0, math.inf
        for s, it in zip(samples, items):
            doc = int(s["doc_id"])
            lls = [float(r[0]) for r in s["filtered_resps"]]
            self.assertEqual(lls, [float(r[0][0]) for r in s["resps"]], f"{lm_task} doc {doc}: filtered_resps differ from resps")
            ours = it["loglik"]
            self.assertEqual(len(ours), len(lls), f"{lm_task} doc {doc}: {len(ours)} choices vs lm-eval's {len(lls)}")
            if isinstance(s["target"], int):
                self.assertEqual(it["gold"], s["target"], f"{lm_task} doc {doc}: gold")
            for c, (a, b) in enumerate(zip(ours, lls)):
                if abs(a - b) > worst:
                    worst, worst_at = abs(a - b), [doc, c]
                self.assertLessEqual(abs(a - b), TOL, f"{lm_task} doc {doc} choice {c}: flatune {a!r} vs lm-eval {b!r}\n"
                                                      f"lm-eval's request: {s['arguments'][c]!r}")
            # The closest call between the best choice and the runner-up (per character for
            # acc_norm): how far these numbers are from a flip of the prediction.
            choices = [len(c) for c in self.choice_texts(lm_task, s)]
            for key in ([lls] if "acc" in metrics else []) + ([[v / n for v, n in zip(lls, choices)]] if "acc_norm" in metrics else []):
                top = sorted(key, reverse=True)
                gap = min(gap, top[0] - top[1])
            for m in metrics:
                self.assertEqual(float(it["pred_" + m] == it["gold"]), float(s[m]),
                                 f"{lm_task} doc {doc}: {m}: flatune predicts {it['pred_' + m]} (gold {it['gold']}); "
                                 f"lm-eval {s[m]}; logliks flatune {ours}, lm-eval {lls}")
            if mass:
                worst_mass = max(worst_mass, abs(it["true_mass"] - float(s["acc"])))
                self.assertLessEqual(abs(it["true_mass"] - float(s["acc"])), TOL, f"{lm_task} doc {doc}: true-answer mass")
        res = self.lm["results"][lm_task]
        report = {"n": len(items), "max_abs_loglik_diff": worst, "at_doc_choice": worst_at}
        if metrics:
            report["closest_call"] = gap
        for m in metrics:
            ours = sum(float(it["pred_" + m] == it["gold"]) for it in items) / len(items)
            self.assertEqual(ours, res[f"{m},none"], f"{lm_task}: {m}: flatune {ours} vs lm-eval {res[m + ',none']}")
            report[m] = {"flatune": ours, "lm_eval": res[f"{m},none"]}
        if mass:
            ours = sum(it["true_mass"] for it in items) / len(items)
            self.assertLessEqual(abs(ours - res["acc,none"]), TOL)
            report["acc"] = {"flatune": ours, "lm_eval": res["acc,none"], "max_abs_item_diff": worst_mass}
        self.reports[lm_task] = report
        return report

    @staticmethod
    def choice_texts(lm_task, sample):
        """The choices whose lengths acc_norm divides by: the continuations less the target
        delimiter, or for WinoGrande (one context per choice) the contexts."""
        args = sample["arguments"]
        if lm_task == "parity_winogrande":
            return [a[0] for a in args]
        return [a[1][1:] for a in args]

    def check(self, lm_task, metrics):
        name = self.suites[lm_task][2]
        self.compare(lm_task, self.flatune_items(name), metrics)
        for m in metrics:  # the task file's summary is the same number
            self.assertEqual(self.flatune_metric(name, m), self.lm["results"][lm_task][f"{m},none"], f"{name}.json {m}")

    # -- the suites
    def test_arc(self):
        self.check("parity_arc", ["acc", "acc_norm"])

    def test_arc_fewshot_from_the_evaluated_split(self):
        self.check("parity_arc_fewshot", ["acc", "acc_norm"])

    def test_hellaswag(self):
        self.check("parity_hellaswag", ["acc", "acc_norm"])

    def test_mmlu_5shot_from_dev(self):
        by_subject = {}
        for it in self.flatune_items("mmlu"):
            by_subject.setdefault(it["id"].split("/")[0], []).append(it)
        self.assertEqual(sorted(by_subject), sorted(MMLU_SUBJECTS))
        for subject in MMLU_SUBJECTS:
            self.compare(f"parity_mmlu_{subject}", by_subject[subject], ["acc"])
        # flatune's file-level acc is lm-eval's size-weighted group mean.
        n = sum(len(v) for v in by_subject.values())
        weighted = sum(self.lm["results"][f"parity_mmlu_{s}"]["acc,none"] * len(by_subject[s]) for s in MMLU_SUBJECTS) / n
        self.assertTrue(math.isclose(self.flatune_metric("mmlu", "acc"), weighted, rel_tol=0, abs_tol=1e-12))

    def test_winogrande_partial_scoring(self):
        self.check("parity_winogrande", ["acc"])  # lm-eval's winogrande reports acc only

    def test_race(self):
        self.check("parity_race", ["acc"])

    def test_piqa(self):
        self.check("parity_piqa", ["acc", "acc_norm"])

    def test_siqa(self):
        self.check("parity_siqa", ["acc"])

    def test_boolq(self):
        self.check("parity_boolq", ["acc"])

    def test_copa(self):
        self.check("parity_copa", ["acc"])

    def test_rte(self):
        self.check("parity_rte", ["acc"])

    def test_openbookqa(self):
        self.check("parity_openbookqa", ["acc", "acc_norm"])

    def test_truthfulqa_mc1(self):
        self.check("parity_truthfulqa_mc1", ["acc"])

    def test_truthfulqa_mc2(self):
        self.compare("parity_truthfulqa_mc2", self.flatune_items("parity_truthfulqa_mc2"), [], mass=True)


if __name__ == "__main__":
    pc.main()
