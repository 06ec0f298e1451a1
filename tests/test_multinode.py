"""Two nodes of one process each, as `srun` starts them in a 2-node Slurm allocation (the variables it sets for each
task; MASTER_ADDR/PORT on this machine): they meet over gloo, train one job to the end and make one MLflow run."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from lmlab.runs.export_dir import load_export

from .conftest import ROOT, TINY, run_env

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _task(node: int, port: int) -> dict[str, str]:
    """What srun exports to the task on node `node` of a 2-node, 1-task-per-node job."""
    return {
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "lmlab-multinode",
        "SLURM_NNODES": "2",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NTASKS": "2",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_NODELIST": "127.0.0.1",
        "SLURM_PROCID": str(node),
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": str(node),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "OMP_NUM_THREADS": "1",
    }


def test_two_nodes_rendezvous_train_to_the_end_and_make_one_mlflow_run(tmp_path):
    steps = 40
    cmd = [sys.executable, "train.py", *TINY, "trainer.num_nodes=2", "trainer.devices=1", f"trainer.max_steps={steps}"]
    env, port = run_env(tmp_path), _free_port()
    nodes = [
        subprocess.Popen(
            cmd, cwd=ROOT, env={**env, **_task(node, port)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for node in (0, 1)
    ]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output[-3000:]
    for rank, output in enumerate(outputs):  # each rank of the 2-process world, one on each "node"
        assert f"Initializing distributed: GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in output
    [run_dir] = (tmp_path / "outputs" / "default").iterdir()
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("lmlab").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["lmlab.slurm_job_id"] == "4242"
    logged = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert len(logged) == len(set(logged)) == steps // 2, "every logged step once, from one rank"
    assert load_export(str(run_dir)).global_step == steps
