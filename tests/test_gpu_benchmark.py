"""experiments/gpu_benchmark.py --dry-run: the GPU benchmark's code path (bf16 autocast, torch.compile, both models'
objectives) on the CPU at toy size, so it is known to run before a GPU is lent."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow


def test_the_gpu_benchmark_dry_run_trains_both_models_compiled_in_bf16_and_prints_its_table(tmp_path):
    done = subprocess.run(
        [sys.executable, "experiments/gpu_benchmark.py", "--dry-run"],
        cwd=ROOT,
        env={**os.environ, "LMLAB_ROOT": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| base") or "gpt2_124m" in line]
    assert [(r[0], r[1]) for r in rows] == [("| base", "mlm"), ("| gpt2_124m", "clm")]
    assert all(float(r[4].replace(",", "")) > 0 for r in rows)  # tokens/s
