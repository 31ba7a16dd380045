"""Shared helpers of the parity tests (tests/parity/test_*.py): where the flatune binary and the
shared test data are, temporary folders, running flatune. Stdlib only; every test imports this
from its own folder. Helpers are appended here, never rewritten, as several tests use them."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# Parity tests are offline by construction: set the switches also when a test runs by hand.
for _k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_k, "1")


def flatune_binary():
    """FLATUNE_BINARY (ctest sets it), else <repo>/build/flatune."""
    path = os.environ.get("FLATUNE_BINARY") or os.path.join(REPO, "build", "flatune")
    if not os.path.isfile(path):
        raise unittest.SkipTest(f"flatune binary not found at {path} (build it, or set FLATUNE_BINARY)")
    return path


def shared_dir():
    """FLATUNE_SHARED, else FLATUNE_SHARED_DEFAULT (ctest sets it), else <repo>/../shared."""
    return os.environ.get("FLATUNE_SHARED") or os.environ.get("FLATUNE_SHARED_DEFAULT") or os.path.join(REPO, "..", "shared")


def testdata(*parts, required=True):
    """A path under shared/testdata; SkipTest when it is absent and required."""
    path = os.path.join(shared_dir(), "testdata", *parts)
    if required and not os.path.exists(path):
        raise unittest.SkipTest(f"test data not found: {path} (set FLATUNE_SHARED)")
    return path


def make_temp_dir(prefix):
    """A fresh temporary folder, removed at exit unless PARITY_KEEP=1 (then its path is printed)."""
    path = tempfile.mkdtemp(prefix=f"flatune-{prefix}-")
    if os.environ.get("PARITY_KEEP") == "1":
        print(f"[parity] keeping {path}", file=sys.stderr)
    else:
        import atexit
        atexit.register(shutil.rmtree, path, True)
    return path


def run_flatune(*args, timeout=600, check=True, env=None):
    """Runs flatune with the given arguments; returns the CompletedProcess (text). With check,
    a non-zero exit raises AssertionError carrying the command and its output."""
    cmd = [flatune_binary()] + [str(a) for a in args]
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    p = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout, env=full_env)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}\nstdout:\n{p.stdout[-4000:]}\nstderr:\n{p.stderr[-4000:]}")
    return p


def write_jsonl(path, rows):
    """One JSON value a line, UTF-8, non-ASCII written as is."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    """unittest.main with verbose output; exits non-zero on any failure or error."""
    unittest.main(verbosity=2)
