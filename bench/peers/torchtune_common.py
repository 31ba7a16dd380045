"""What torchtune's peers share: the config of its full_finetune_single_device recipe, running the
installed recipe unchanged (`tune run`), and reading the per-step log it writes. Runs in
.venv-torchtune (bench/peers/setup-torchtune.sh says why)."""
import glob
import os
import re
import subprocess
import sys


def recipe_config(*, out, logs, model, tokenizer, max_seq_len, checkpointer, dataset, batch, bf16, max_steps=None):
    """The recipe's YAML: `model` the llama2 builder's arguments, `checkpointer` and `dataset` YAML
    blocks (indented by two), the Llama-2 tokenizer without its chat template (the [INST] markers
    it wraps messages in by default; the data brings its own prompt), its chunked cross-entropy,
    AdamW lr 1e-4 without decay, clipping 1.0, one epoch, no shuffling, no compile, no activation
    checkpointing or offloading, a log line every step."""
    model_yaml = "".join(f"  {k}: {v}\n" for k, v in model.items())
    return f"""output_dir: {out}
model:
  _component_: torchtune.models.llama2.llama2
{model_yaml}tokenizer:
  _component_: torchtune.models.llama2.llama2_tokenizer
  path: {tokenizer}
  max_seq_len: {max_seq_len}
  prompt_template: null
checkpointer:
{checkpointer}resume_from_checkpoint: False
dataset:
{dataset}seed: 0
shuffle: False
batch_size: {batch}
epochs: 1
max_steps_per_epoch: {"null" if max_steps is None else max_steps}
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
dtype: {"bf16" if bf16 else "fp32"}
metric_logger:
  _component_: torchtune.training.metric_logging.DiskLogger
  log_dir: {logs}
log_every_n_steps: 1
log_peak_memory_stats: False
profiler:
  _component_: torchtune.training.setup_torch_profiler
  enabled: False
"""


def run_recipe(cfg_text, workdir, threads):
    """Writes the config into workdir and runs `tune run full_finetune_single_device` on it."""
    cfg_path = os.path.join(workdir, "config.yaml")
    with open(cfg_path, "w") as f:
        f.write(cfg_text)
    env = dict(os.environ)
    if threads > 0:
        env["OMP_NUM_THREADS"] = str(threads)
    tune = os.path.join(os.path.dirname(sys.executable), "tune")
    r = subprocess.run([tune, "run", "full_finetune_single_device", "--config", cfg_path], env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"torchtune's recipe failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    return r


def step_rates(logs, stderr=""):
    """{step: tokens_per_second_per_gpu} from the DiskLogger files in logs. The recipe's figure is
    the step's label tokens (labels not -100) over the step's wall time."""
    steps = {}
    for log in glob.glob(os.path.join(logs, "*.txt")):
        for line in open(log):
            m = re.match(r"Step (\d+) \| .*tokens_per_second_per_gpu:([0-9.eE+-]+)", line)
            if m:
                steps[int(m.group(1))] = float(m.group(2))
    if len(steps) < 2:
        raise SystemExit(f"fewer than two steps in torchtune's log ({logs}); it printed:\n{stderr[-2000:]}")
    return steps
