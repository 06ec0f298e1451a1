"""A `-m objective=...` sweep over every objective gives one MLflow run each, grouped as one sweep, and the
results script turns it into a table."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from .conftest import CONF, ROOT, TINY, run_env

OBJECTIVES = sorted(p.stem for p in (CONF / "objective").glob("*.yaml"))


@pytest.mark.slow
def test_sweep_over_every_objective_is_one_mlflow_sweep_and_a_results_table(tmp_path):
    cmd = [sys.executable, "train.py", "-m", f"objective={','.join(OBJECTIVES)}", *TINY, "trainer.max_steps=6"]
    cmd += ["trainer.val_check_interval=3", "experiment=every_objective"]
    done = subprocess.run(cmd, cwd=ROOT, env=run_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("lmlab").experiment_id])
    assert sorted(r.data.tags["lmlab.objective"] for r in runs) == OBJECTIVES
    assert all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags["lmlab.sweep"] for r in runs}) == 1
    for r in runs:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val/loss")]
        assert steps == [0, 3, 6], (r.data.tags["lmlab.objective"], steps)

    results = [sys.executable, "experiments/results.py", "every_objective", "--print"]
    results += ["--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    table = subprocess.run(results, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True).stdout
    rows = [line for line in table.splitlines() if line.startswith("| ") and "objective" not in line]
    assert sorted(r.split("|")[1].strip() for r in rows) == OBJECTIVES
    assert all("→" in r for r in rows)
    sweep = runs[0].data.tags["lmlab.sweep"]
    assert f"from sweep {sweep} (commit " in table


def test_a_table_gathered_from_several_sweeps_names_each_newest_first():
    import importlib.util
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location("results_script", ROOT / "experiments" / "results.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    def run(sweep: str, commit: str, start: int):
        tags = {"lmlab.sweep": sweep, "lmlab.git_commit": f"{commit}0123456789"}
        return SimpleNamespace(info=SimpleNamespace(start_time=start), data=SimpleNamespace(tags=tags))

    runs = [run("old", "a", 1), run("new", "c", 4), run("old", "b", 2), run("old", "b", 3)]
    assert script.provenance(runs) == "sweeps new (commit c012345678), old (commits b012345678, a012345678)"
    assert script.provenance(runs[:1]) == "sweep old (commit a012345678)"
