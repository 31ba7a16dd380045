"""Parity of flatune's model numerics and of the folders it writes, judged by transformers.

1. Tiny models made here by transformers' own classes (Llama MHA/GQA, RoPE linear and llama3,
   tied embeddings, attention and MLP biases with an explicit head_dim, Mistral, Qwen2; a sharded
   and a bf16 save) must give flatune's logits (tests/parity/parity_logits) within 1e-4 in fp32,
   with transformers' eager and sdpa attention alike.
2. Every folder `flatune train` and `flatune merge` write (final/, checkpoints/step-N/, the merge
   output) must load with AutoModelForCausalLM / AutoTokenizer, with the dtype its weights are
   stored in, and give flatune's logits for the same folder within 1e-4.
(PEFT adapters: test_peft.py, which imports the helpers below.)

Environment (tests/parity.cmake sets it): FLATUNE_BINARY, PARITY_LOGITS, FLATUNE_SHARED or
FLATUNE_SHARED_DEFAULT. Run by hand from the repository root:
    .venv/bin/python tests/parity/test_transformers.py -v
(defaults: build/flatune, build/tests/parity_logits, ../shared). PARITY_KEEP=1 keeps the work
folder and prints its path.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

transformers.utils.logging.disable_progress_bar()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parity_common import shared_dir  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOL = 1e-4  # max abs difference of fp32 logits
VOCAB = 320
BATCH, SEQ = 2, 24


def tokenizer_source():
    """The bytes-320 tokenizer of the shared test models (None when the shared folder is absent)."""
    d = os.path.join(shared_dir(), "testdata", "models", "llama-mha")
    ok = all(os.path.isfile(os.path.join(d, f)) for f in ("tokenizer.json", "tokenizer_config.json"))
    return d if ok else None


def binary(env, default):
    """The executable env names (ctest sets it: missing is an error), else <repo>/default (by hand:
    missing skips)."""
    path = os.environ.get(env)
    if path:
        if not os.access(path, os.X_OK):
            raise AssertionError(f"{env}={path} is not an executable")
        return path
    path = os.path.join(REPO, default)
    if not os.access(path, os.X_OK):
        raise unittest.SkipTest(f"{path} not found (build it, or set {env})")
    return path


def flatune_binary():
    return binary("FLATUNE_BINARY", "build/flatune")


def parity_logits_binary():
    return binary("PARITY_LOGITS", "build/tests/parity_logits")


def run(cmd, what):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        raise AssertionError(f"{what} failed (exit {p.returncode}):\n  {' '.join(cmd)}\n{p.stdout[-4000:]}")
    return p.stdout


class Work:
    """A temporary work folder shared by the tests of one process."""

    path = None

    @classmethod
    def dir(cls):
        if cls.path is None:
            cls.path = tempfile.mkdtemp(prefix="flatune-parity-hf-")
            if os.environ.get("PARITY_KEEP"):
                print(f"work folder: {cls.path}", file=sys.stderr)
        return cls.path

    @classmethod
    def cleanup(cls):
        if cls.path and not os.environ.get("PARITY_KEEP"):
            shutil.rmtree(cls.path, ignore_errors=True)
        cls.path = None


def work(*parts):
    return os.path.join(Work.dir(), *parts)


_ids_cache = {}


def input_ids(seed=1234, batch=BATCH, seq=SEQ):
    """A fixed random batch of ids (every id of the vocabulary is fair game) and its safetensors file."""
    key = (seed, batch, seq)
    if key not in _ids_cache:
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, VOCAB, (batch, seq), generator=g, dtype=torch.int64)
        path = work(f"ids-{seed}-{batch}x{seq}.safetensors")
        save_file({"input_ids": ids}, path)
        _ids_cache[key] = (ids, path)
    return _ids_cache[key]


def flatune_logits(model_dir, adapter_dir=None, ids_seed=1234):
    _, ids_path = input_ids(ids_seed)
    out = work(f"logits-{abs(hash((model_dir, adapter_dir, ids_seed)))}.safetensors")
    cmd = [parity_logits_binary(), model_dir, ids_path, out] + ([adapter_dir] if adapter_dir else [])
    run(cmd, "parity_logits")
    logits = load_file(out)["logits"]
    os.remove(out)
    return logits


@torch.no_grad()
def hf_logits(model, ids_seed=1234):
    ids, _ = input_ids(ids_seed)
    model.eval()
    return model(input_ids=ids).logits.float()


def max_diff(a, b):
    if a.shape != b.shape:
        raise AssertionError(f"logits shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a.double() - b.double()).abs().max().item()


def copy_tokenizer(dst):
    src = tokenizer_source()
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(src, f), os.path.join(dst, f))


def stored_dtypes(folder):
    """The set of dtypes of the weight files of a HF folder (single file or shards)."""
    files = [f for f in os.listdir(folder) if f.endswith(".safetensors") and f.startswith("model")]
    out = set()
    for f in files:
        with safe_open(os.path.join(folder, f), "pt") as s:
            for k in s.keys():
                out.add(s.get_slice(k).get_dtype())
    return out


_DTYPE = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def load_hf(folder, attn="eager", dtype=None):
    """AutoModelForCausalLM.from_pretrained, refusing missing/unexpected/mismatched weights."""
    kwargs = {"attn_implementation": attn, "output_loading_info": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    model, info = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        v = info.get(k)
        if v:
            raise AssertionError(f"{folder}: transformers reports {k}: {sorted(v)[:8]}")
    return model.eval()


def check_hf_folder(test, folder, label, results, attns=("eager",)):
    """The folder loads in transformers as stored (default dtype 'auto'), its tokenizer loads, and
    transformers' fp32 logits match flatune's for the same folder."""
    tok = AutoTokenizer.from_pretrained(folder)
    test.assertEqual(len(tok), VOCAB, f"{label}: tokenizer size")
    test.assertTrue(len(tok("parity check").input_ids) > 0)
    stored = stored_dtypes(folder)
    test.assertEqual(len(stored), 1, f"{label}: mixed weight dtypes {stored}")
    stored_dtype = _DTYPE[stored.pop()]
    auto = load_hf(folder)
    test.assertEqual(auto.dtype, stored_dtype,
                     f"{label}: transformers' default (dtype='auto') loads {auto.dtype} but the weights are "
                     f"stored as {stored_dtype}: config.json's dtype/torch_dtype disagree with the files")
    del auto
    ours = flatune_logits(folder)
    for attn in attns:
        ref = hf_logits(load_hf(folder, attn, torch.float32))
        d = max_diff(ours, ref)
        results.append((label, attn, d))
        test.assertLessEqual(d, TOL, f"{label} ({attn}): flatune vs transformers max abs diff {d:.3g}")
    return ours


def randomize_extras(model, seed):
    """transformers initialises biases to 0 and norm weights to 1: make them random too, so that a
    bias or norm flatune drops or misreads shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            elif "norm" in name:
                p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.3)


COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=128, initializer_range=0.3, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)

# name -> (model class, config class, config fields over COMMON, feature the case must be sensitive to)
CASES = {
    "llama-mha": (LlamaForCausalLM, LlamaConfig, {}, None),
    "llama-gqa": (LlamaForCausalLM, LlamaConfig, dict(num_key_value_heads=2, rope_theta=50000.0), "rope_theta"),
    "llama-rope-linear": (LlamaForCausalLM, LlamaConfig,
                          dict(num_key_value_heads=2, rope_scaling={"rope_type": "linear", "factor": 4.0}), "rope"),
    "llama-rope-llama3": (LlamaForCausalLM, LlamaConfig,
                          dict(hidden_size=64, num_key_value_heads=1, rope_theta=500000.0,
                               rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                             "high_freq_factor": 4.0, "original_max_position_embeddings": 64}), "rope"),
    "llama-tied": (LlamaForCausalLM, LlamaConfig, dict(num_key_value_heads=2, tie_word_embeddings=True), None),
    "llama-bias-headdim": (LlamaForCausalLM, LlamaConfig,
                           dict(num_key_value_heads=2, head_dim=16, attention_bias=True, mlp_bias=True), None),
    "mistral-window": (MistralForCausalLM, MistralConfig, dict(num_key_value_heads=2, sliding_window=64), None),
    "mistral-nowindow": (MistralForCausalLM, MistralConfig,
                         dict(num_key_value_heads=1, sliding_window=None, rope_theta=1e6), "rope_theta"),
    "qwen2-tied": (Qwen2ForCausalLM, Qwen2Config,
                   dict(num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1e6), "rope_theta"),
}


def make_config(name):
    _, cfg_cls, extra, _ = CASES[name]
    fields = dict(COMMON)
    fields.update(extra)
    return cfg_cls(**fields)


def make_model(name, seed=0):
    cls = CASES[name][0]
    torch.manual_seed(seed)
    model = cls(make_config(name))
    randomize_extras(model, seed + 1)
    return model.eval()


_saved = {}


def saved_model(name, variant="plain"):
    """Saves the case's model (once per process) with save_pretrained and returns the folder.
    variant: plain | sharded (max_shard_size 20KB) | bf16 (weights saved as bfloat16)."""
    key = (name, variant)
    if key not in _saved:
        folder = work("hf", f"{name}-{variant}")
        model = make_model(name, seed=sorted(CASES).index(name))
        if variant == "plain":
            model.save_pretrained(folder)
        elif variant == "sharded":
            model.save_pretrained(folder, max_shard_size="20KB")
        elif variant == "bf16":
            model.to(torch.bfloat16).save_pretrained(folder)
        else:
            raise ValueError(variant)
        copy_tokenizer(folder)
        _saved[key] = folder
    return _saved[key]


RESULTS = []  # (case, attention, max abs diff), printed at the end


def print_results(title):
    if not RESULTS:
        return
    print(f"\n{title}: max |flatune - reference| of fp32 logits (tolerance {TOL:g})", file=sys.stderr)
    for label, attn, d in RESULTS:
        print(f"  {label:<44} {attn:<14} {d:.3e}", file=sys.stderr)


def require_shared(test):
    if tokenizer_source() is None:
        test.skipTest(f"the shared test data ({shared_dir()}/testdata/models/llama-mha tokenizer) is absent")


class TransformersModels(unittest.TestCase):
    """Models transformers made and saved: flatune must give their logits."""

    def setUp(self):
        require_shared(self)

    def check_case(self, name, variant="plain"):
        folder = saved_model(name, variant)
        label = name if variant == "plain" else f"{name} ({variant})"
        with open(os.path.join(folder, "config.json")) as f:
            cfg = json.load(f)
        if variant == "sharded":
            self.assertTrue(os.path.isfile(os.path.join(folder, "model.safetensors.index.json")))
            shards = [f for f in os.listdir(folder) if f.startswith("model-") and f.endswith(".safetensors")]
            self.assertGreater(len(shards), 2, "expected several shards")
        if variant == "bf16":
            self.assertEqual(cfg.get("dtype", cfg.get("torch_dtype")), "bfloat16")
        ours = check_hf_folder(self, folder, label, RESULTS, attns=("eager", "sdpa"))
        # The eager result is the reference; the feature under test must matter to it, far beyond TOL.
        feature = CASES[name][3]
        if feature and variant == "plain":
            base = load_hf(folder, "eager", torch.float32)
            cfg_off = make_config(name)
            if feature == "rope":
                cfg_off.rope_parameters = {"rope_type": "default", "rope_theta": cfg_off.rope_parameters["rope_theta"]}
            elif feature == "rope_theta":
                cfg_off.rope_parameters = dict(cfg_off.rope_parameters, rope_theta=10000.0)
            off = type(base)(cfg_off)
            off.load_state_dict(base.state_dict())
            d = max_diff(ours, hf_logits(off))
            self.assertGreater(d, 100 * TOL, f"{label}: turning off {feature} changes the logits by only {d:.3g}: "
                               "the case does not test it")

    def test_llama_mha(self):
        self.check_case("llama-mha")

    def test_llama_gqa(self):
        self.check_case("llama-gqa")

    def test_llama_rope_linear(self):
        self.check_case("llama-rope-linear")

    def test_llama_rope_llama3(self):
        self.check_case("llama-rope-llama3")

    def test_llama_tied(self):
        self.check_case("llama-tied")

    def test_llama_bias_head_dim(self):
        self.check_case("llama-bias-headdim")

    def test_mistral_sliding_window_longer_than_sequence(self):
        self.check_case("mistral-window")

    def test_mistral_no_sliding_window(self):
        self.check_case("mistral-nowindow")

    def test_qwen2_tied(self):
        self.check_case("qwen2-tied")

    def test_sharded(self):
        self.check_case("llama-gqa", "sharded")

    def test_bf16_weights(self):
        self.check_case("llama-rope-llama3", "bf16")
        self.check_case("qwen2-tied", "bf16")


def write_train_data(path):
    """A few prompt/response pairs in flatune's jsonl format (short: the bytes tokenizer spends a token
    per byte)."""
    pairs = [("2+2=", "4"), ("Capital of France?", "Paris"), ("Opposite of hot?", "cold"), ("3*3=", "9"),
             ("Color of the sky?", "blue"), ("Say hi.", "hi there"), ("1+5=", "6"), ("First letter?", "A")]
    with open(path, "w") as f:
        for p, r in pairs:
            f.write(json.dumps({"prompt": p, "response": r}) + "\n")
    return path


def flatune_train(base, out, *extra, steps=3, save_every=2, lr=1e-2):
    data = work("train.jsonl")
    if not os.path.exists(data):
        write_train_data(data)
    cmd = [flatune_binary(), "train", "--model", base, "--data", data, "--format", "jsonl", "--template", "plain",
           "--max-length", "48", "--batch-size", "2", "--max-steps", str(steps), "--save-every", str(save_every),
           "--keep-last", "5", "--lr", str(lr), "--schedule", "constant", "--seed", "3", "--threads", "2",
           "--out", out] + list(extra)
    run(cmd, "flatune train")
    return out


def flatune_merge(base, tuned, alpha, out):
    run([flatune_binary(), "merge", "--base", base, "--tuned", tuned, "--alpha", str(alpha), "--out", out], "flatune merge")
    return out


def checkpoint_dirs(run_dir):
    d = os.path.join(run_dir, "checkpoints")
    return sorted(os.path.join(d, s) for s in os.listdir(d)) if os.path.isdir(d) else []


class FlatuneFolders(unittest.TestCase):
    """Folders flatune writes load in transformers and give flatune's logits."""

    def setUp(self):
        require_shared(self)

    def check_run(self, name, variant="plain", *train_args):
        base = saved_model(name, variant)
        tag = name if variant == "plain" else f"{name}-{variant}"
        run_dir = flatune_train(base, work("runs", tag), *train_args)
        final = os.path.join(run_dir, "final")
        ckpts = checkpoint_dirs(run_dir)
        self.assertTrue(ckpts, f"{run_dir}: no checkpoints/step-N written (--save-every 2, 3 steps)")
        # Each folder is its own subtest, so that one failure does not hide the others.
        with self.subTest(folder="final/"):
            tuned = check_hf_folder(self, final, f"train {tag}: final/", RESULTS)
            self.assertGreater(max_diff(tuned, flatune_logits(base)), 100 * TOL, "training did not change the model")
        for c in ckpts:
            with self.subTest(folder=f"checkpoints/{os.path.basename(c)}/"):
                check_hf_folder(self, c, f"train {tag}: checkpoints/{os.path.basename(c)}/", RESULTS)
        merged = flatune_merge(base, final, 0.5, work("merged", tag))
        with self.subTest(folder="merge alpha 0.5"):
            check_hf_folder(self, merged, f"merge {tag} alpha 0.5", RESULTS)
        with self.subTest(folder="merge alpha 0.5: weights"):
            # The merge is the fp32 average of the weights of the two folders as transformers loads them.
            sa = load_hf(base, dtype=torch.float32).state_dict()
            sb = load_hf(final, dtype=torch.float32).state_dict()
            sm = load_hf(merged, dtype=torch.float32).state_dict()
            worst = max(((sm[k].double() - 0.5 * sa[k].double() - 0.5 * sb[k].double()).abs().max().item(), k) for k in sm)
            self.assertLessEqual(worst[0], 1e-6, f"merge {tag}: weight {worst[1]} differs from (base + tuned) / 2 "
                                 f"by {worst[0]:.3g}")
        return run_dir

    def test_train_and_merge_llama_gqa(self):
        self.check_run("llama-gqa")

    def test_train_and_merge_llama3_rope(self):
        self.check_run("llama-rope-llama3")

    def test_train_and_merge_qwen2_tied(self):
        self.check_run("qwen2-tied")

    def test_train_bf16_base(self):
        self.check_run("llama-tied", "bf16")

    def test_train_save_dtype_bf16(self):
        run_dir = flatune_train(saved_model("mistral-window"), work("runs", "mistral-save-bf16"),
                                "--save-dtype", "bfloat16", steps=2, save_every=0)
        check_hf_folder(self, os.path.join(run_dir, "final"), "train mistral --save-dtype bfloat16: final/", RESULTS)


def main():
    try:
        prog = unittest.main(exit=False, verbosity=2)
        ok = prog.result.wasSuccessful()
    finally:
        print_results("transformers parity")
        Work.cleanup()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
