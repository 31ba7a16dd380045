"""How the peer scripts report: one printed line and the same JSON fields for every program, so
bench/sft.py and bench/matrix.sh read any peer alike. Plain Python: both venvs import it."""
import json


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def sft_result(program, *, mode, variant, tokens, seconds, all_tokens, steps, epoch_tokens, json_path=None, **extra):
    """An instruction-tuning epoch: `tokens` real (not padding) tokens of the timed steps out of
    `all_tokens` in their batches, over `seconds`; `epoch_tokens` the real tokens of every step."""
    result = {"mode": mode, "variant": variant, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
              "padding_share": 1 - tokens / all_tokens, "steps": steps, "epoch_tokens": epoch_tokens, **extra}
    print(f"{program} {mode:<8} {variant:<6} {result['tokens_per_s']:8.0f} real tokens/s ({tokens} tokens in "
          f"{seconds:.1f} s, {100 * result['padding_share']:.0f}% padding, {steps} steps)", flush=True)
    if json_path:
        write_json(json_path, result)
    return result
