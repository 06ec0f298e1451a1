"""What `train.py` prints in a log file or a Slurm job (stdout not a terminal): progress lines, not a redrawn bar;
no product tips or known-harmless warnings; a closing summary that says where the results are. And what it records
of its environment."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys

import torch
from mlflow.tracking import MlflowClient

from .conftest import ROOT, TINY, run_env


def test_a_logged_run_prints_progress_lines_and_a_closing_summary_without_noise(tmp_path):
    overrides = [*TINY, "trainer.max_steps=20", "trainer.log_every_n_steps=5", "trainer.enable_progress_bar=true"]
    done = subprocess.run(
        [sys.executable, "train.py", *overrides], cwd=ROOT, env=run_env(tmp_path), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout + done.stderr
    for noise in ("Tip", "litlogger", "litmodels", "deprecated", "Total Flops", "srun", "Creating initial MLflow"):
        assert noise not in out, noise
    assert "\r" not in out and "it/s]" not in out  # no redrawn bar
    progress = re.findall(r"step (\d+)/20", out)
    assert progress == ["5", "10", "15", "20"]  # one line per trainer.log_every_n_steps
    [run_dir] = (tmp_path / "outputs" / "default").iterdir()
    assert "Finished at step 20: val/acc=" in out and f"output dir: {run_dir}" in out
    run_id = re.search(r"MLflow run: ([0-9a-f]{32}) in sqlite:///", out).group(1)
    assert run_id in (run_dir / "tracking.json").read_text()
    assert f"mlflow ui --backend-store-uri 'sqlite:///{tmp_path}/mlflow.db' --host 127.0.0.1" in out
    # The run's environment is recorded with it.
    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(run_id)
    lock = hashlib.sha256((ROOT / "requirements" / "lock.txt").read_bytes()).hexdigest()
    assert run.data.tags["lmlab.env.lock_sha256"] == lock
    assert run.data.tags["lmlab.env.torch"] == torch.__version__ and run.data.tags["lmlab.env.python"]
    assert run.data.tags["lmlab.env.cuda"] == (torch.version.cuda or "none") and run.data.tags["lmlab.env.lightning"]
    frozen = (run_dir / "environment.txt").read_text()
    assert f"torch=={torch.__version__}\n" in frozen and "mlflow==" in frozen
    artifacts = {a.path for a in MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").list_artifacts(run_id)}
    assert "environment.txt" in artifacts
