"""Parity of flatune's LoRA adapters with PEFT.

`flatune train --lora-rank R --lora-alpha A --lora-targets ...` writes PEFT adapter folders
(final/adapter/ and checkpoints/step-N/). For each:
- peft.PeftModel.from_pretrained(transformers' base, adapter) loads every adapter tensor flatune
  wrote (no missing or unexpected keys) with flatune's r, lora_alpha and targets;
- its fp32 logits match flatune's (parity_logits BASE IDS OUT ADAPTER) within 1e-4, and the adapter
  changes the logits by far more than that (lora_B is 0 at initialisation: training must move it);
- merge_and_unload() gives the logits, within 1e-4, of `flatune merge --base BASE --tuned ADAPTER
  --alpha 1` loaded by transformers, whose weights match PEFT's merged weights, and of flatune
  itself on that folder and on the run's final/ (which the trainer saves merged).
Cases: q_proj v_proj with lora_alpha 2 x rank on a GQA Llama; all seven projections with
lora_alpha / rank = 2.5 on a Llama with biases and head_dim != hidden / heads; k_proj o_proj
down_proj on a tied Qwen2.

Run by hand from the repository root: .venv/bin/python tests/parity/test_peft.py -v
(the environment of test_transformers.py).
"""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_transformers as hf  # noqa: E402  (helpers only; its TestCases are not run from here)

import warnings  # noqa: E402

import peft  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

TOL = hf.TOL
RESULTS = hf.RESULTS


class PeftAdapters(unittest.TestCase):
    def setUp(self):
        hf.require_shared(self)
        # A transformers 5.24 deprecation PEFT 0.21 still triggers: noise only. (Here, not at import:
        # unittest's runner resets the warning filters.)
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

    def check_lora(self, name, rank, alpha, targets, steps=6, lr=5e-2):
        base = hf.saved_model(name)
        tag = f"{name} r{rank} a{alpha:g} {'+'.join(t.split('_')[0] for t in targets)}"
        run_dir = hf.flatune_train(base, hf.work("runs", f"lora-{name}-{'-'.join(targets)}"),
                                   "--lora-rank", str(rank), "--lora-alpha", f"{alpha:g}", "--lora-targets", *targets,
                                   steps=steps, save_every=steps // 2, lr=lr)
        final_adapter = os.path.join(run_dir, "final", "adapter")
        adapters = [final_adapter] + hf.checkpoint_dirs(run_dir)
        self.assertGreaterEqual(len(adapters), 3, f"{run_dir}: expected final/adapter and two checkpoints")
        base_ours = hf.flatune_logits(base)
        for adapter in adapters:
            where = os.path.relpath(adapter, run_dir)
            self.check_adapter(base, adapter, f"lora {tag}: {where}/", rank, alpha, targets, base_ours)
        # The trainer's final/ holds the merged weights: transformers and flatune agree on it, and it
        # is PEFT's merge of final/adapter.
        final_ours = hf.check_hf_folder(self, os.path.join(run_dir, "final"), f"lora {tag}: final/ (merged)", RESULTS)
        merged_peft = self.peft_model(base, final_adapter).merge_and_unload()
        d = hf.max_diff(final_ours, hf.hf_logits(merged_peft))
        RESULTS.append((f"lora {tag}: final/ vs PEFT merge_and_unload", "eager", d))
        self.assertLessEqual(d, TOL, f"lora {tag}: final/ vs PEFT merge_and_unload: {d:.3g}")

    def peft_model(self, base, adapter):
        model = hf.load_hf(base, "eager", torch.float32)
        return peft.PeftModel.from_pretrained(model, adapter).eval()

    def check_adapter(self, base, adapter, label, rank, alpha, targets, base_ours):
        self.assertTrue(os.path.isfile(os.path.join(adapter, "adapter_config.json")), label)
        cfg = peft.PeftConfig.from_pretrained(adapter)
        self.assertIsInstance(cfg, peft.LoraConfig, label)
        self.assertEqual(cfg.r, rank, label)
        self.assertEqual(cfg.lora_alpha, alpha, label)
        self.assertEqual(set(cfg.target_modules), set(targets), label)
        pm = self.peft_model(base, adapter)
        # Every tensor of the file is in the PEFT model, bit for bit, and PEFT has no other adapter weight.
        stored = load_file(os.path.join(adapter, "adapter_model.safetensors"))
        loaded = peft.get_peft_model_state_dict(pm)
        self.assertEqual(set(stored), set(loaded), f"{label}: adapter tensor names differ from what PEFT expects")
        for k, v in stored.items():
            self.assertTrue(torch.equal(v, loaded[k].to(v.dtype)), f"{label}: {k} not loaded as stored")
        with open(os.path.join(base, "config.json")) as f:
            layers = json.load(f)["num_hidden_layers"]
        self.assertEqual(sum(1 for k in stored if k.endswith("lora_A.weight")), len(targets) * layers,
                         f"{label}: one adapter per target and layer")
        self.assertTrue(any(v.abs().max() > 0 for k, v in stored.items() if "lora_B" in k), f"{label}: lora_B is all 0")

        ours = hf.flatune_logits(base, adapter)
        ref = hf.hf_logits(pm)
        d = hf.max_diff(ours, ref)
        RESULTS.append((label + " PeftModel", "eager", d))
        self.assertLessEqual(d, TOL, f"{label}: flatune vs PeftModel logits: {d:.3g}")
        effect = hf.max_diff(ours, base_ours)
        RESULTS.append((label + " adapter effect (must be > 0.1)", "-", effect))
        self.assertGreater(effect, 1000 * TOL, f"{label}: the adapter changes the logits by only {effect:.3g}")

        # Merged: PEFT's merge_and_unload vs flatune merge --alpha 1.
        merged_dir = hf.work("merged", "lora-" + label.replace(" ", "_").replace("/", "_").replace(":", ""))
        hf.flatune_merge(base, adapter, 1, merged_dir)
        merged_ours = hf.check_hf_folder(self, merged_dir, f"{label} flatune merge alpha 1", RESULTS)
        merged_peft = pm.merge_and_unload()
        peft_merged_logits = hf.hf_logits(merged_peft)
        d = hf.max_diff(merged_ours, peft_merged_logits)
        RESULTS.append((label + " flatune vs merge_and_unload", "eager", d))
        self.assertLessEqual(d, TOL, f"{label}: flatune merge vs PEFT merge_and_unload logits: {d:.3g}")
        merged_hf = hf.load_hf(merged_dir, dtype=torch.float32)
        d = hf.max_diff(hf.hf_logits(merged_hf), peft_merged_logits)
        RESULTS.append((label + " transformers(merge) vs merge_and_unload", "eager", d))
        self.assertLessEqual(d, TOL, f"{label}: transformers on flatune's merge vs PEFT merge_and_unload: {d:.3g}")
        ours_sd = merged_hf.state_dict()
        for k, v in merged_peft.state_dict().items():
            self.assertTrue(torch.allclose(ours_sd[k], v, rtol=0, atol=1e-6),
                            f"{label}: merged weight {k} differs from PEFT's by {(ours_sd[k] - v).abs().max():.3g}")

    def test_q_v_llama_gqa(self):
        self.check_lora("llama-gqa", 4, 8, ["q_proj", "v_proj"])

    def test_all_projections_bias_head_dim(self):
        self.check_lora("llama-bias-headdim", 2, 5,
                        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])

    def test_k_o_down_qwen2_tied(self):
        self.check_lora("qwen2-tied", 4, 3, ["k_proj", "o_proj", "down_proj"])

    def test_adapter_written_by_peft(self):
        """The other direction: an adapter PEFT 0.21 saves (its own adapter_config.json fields, random
        lora_B) loads in flatune (parity_logits, flatune merge) with PEFT's numerics."""
        base = hf.saved_model("llama-mha")
        torch.manual_seed(11)
        targets = ["q_proj", "k_proj", "o_proj", "up_proj", "down_proj"]
        pm = peft.get_peft_model(hf.load_hf(base, "eager", torch.float32),
                                 peft.LoraConfig(r=3, lora_alpha=7, target_modules=targets, init_lora_weights=False))
        adapter = hf.work("peft-written-adapter")
        pm.save_pretrained(adapter)
        pm.eval()
        ref = hf.hf_logits(pm)
        ours = hf.flatune_logits(base, adapter)
        d = hf.max_diff(ours, ref)
        label = "PEFT-written r3 a7 q+k+o+up+down"
        RESULTS.append((label + ": flatune vs PeftModel", "eager", d))
        self.assertLessEqual(d, TOL, f"{label}: flatune vs PeftModel logits: {d:.3g}")
        effect = hf.max_diff(ours, hf.flatune_logits(base))
        self.assertGreater(effect, 1000 * TOL, f"{label}: the adapter changes the logits by only {effect:.3g}")
        merged_dir = hf.flatune_merge(base, adapter, 1, hf.work("merged", "peft-written"))
        merged_ours = hf.check_hf_folder(self, merged_dir, f"{label}: flatune merge alpha 1", RESULTS)
        d = hf.max_diff(merged_ours, hf.hf_logits(pm.merge_and_unload()))
        RESULTS.append((label + ": flatune merge vs merge_and_unload", "eager", d))
        self.assertLessEqual(d, TOL, f"{label}: flatune merge vs PEFT merge_and_unload logits: {d:.3g}")


def main():
    try:
        prog = unittest.main(exit=False, verbosity=2)
        ok = prog.result.wasSuccessful()
    finally:
        hf.print_results("PEFT parity")
        hf.Work.cleanup()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
