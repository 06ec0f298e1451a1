"""Runs against a real MLflow tracking server backed by a real PostgreSQL, both started by
scripts/tracking_server.sh (in a state dir of the test's own, on free ports)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lmlab.tracking.buffered import PENDING_FILE

from .conftest import ROOT, TINY, run_env

SCRIPT = ROOT / "scripts" / "tracking_server.sh"

if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
    if os.environ.get("LMLAB_REQUIRE_SERVICES") == "1":
        raise RuntimeError(
            "LMLAB_REQUIRE_SERVICES=1 but PostgreSQL is not installed: scripts/tracking_server.sh install"
        )
    pytest.skip("PostgreSQL is not installed (scripts/tracking_server.sh install)", allow_module_level=True)

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    state: Path
    port: int
    env: dict[str, str]

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, command: str) -> None:
        done = subprocess.run([str(SCRIPT), command], env=self.env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stdout + done.stderr

    def kill_mlflow(self) -> None:
        """SIGKILL the MLflow server and its workers: no chance to finish a request (PostgreSQL stays up)."""
        os.killpg(int((self.state / "mlflow.pid").read_text()), signal.SIGKILL)

    def db_password(self) -> str:
        return (self.state / "pgpass").read_text().strip().rsplit(":", 1)[1]

    def query(self, sql: str, *args: object) -> list[tuple]:
        import psycopg

        conn = psycopg.connect(
            host="127.0.0.1",
            port=self.env["LMLAB_PG_PORT"],
            dbname="mlflow",
            user="lmlab",
            passfile=self.state / "pgpass",
        )
        with conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    # PostgreSQL runs as the postgres user when the tests run as root: its dir must not sit under a private tmp.
    state = Path(tempfile.mkdtemp(prefix="lmlab-tracking-test-", dir="/var/tmp"))
    state.chmod(0o755)
    port = _free_port()
    env = {
        **os.environ,
        "LMLAB_TRACKING_STATE": str(state),
        "LMLAB_TRACKING_PORT": str(port),
        "LMLAB_PG_PORT": str(_free_port()),
        "PYTHON": sys.executable,
    }
    found = Server(state, port, env)
    found.script("start")
    try:
        yield found
    finally:
        found.script("stop")
        shutil.rmtree(state, ignore_errors=True)


TEXT_SUFFIXES = (".json", ".jsonl", ".yaml", ".log", ".txt")


def _train(root: Path, server: Server, *overrides: str, tracking_uri: str | None = None) -> list[str]:
    env = {**run_env(root), "MLFLOW_TRACKING_URI": tracking_uri or server.uri}
    return [sys.executable, "train.py", *TINY, "logger=server", *overrides], env


def test_a_run_is_stored_in_postgresql_and_no_credential_reaches_its_params(tmp_path, server):
    secret = "s3cret-Token"
    cmd, env = _train(tmp_path, server, tracking_uri=f"http://alice:{secret}@127.0.0.1:{server.port}")
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(server.uri)
    [run] = client.search_runs([client.get_experiment_by_name("lmlab").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["logger.tracking_uri"] == f"http://alice:***@127.0.0.1:{server.port}"
    [(status,)] = server.query("SELECT status FROM runs WHERE run_uuid = %s", run.info.run_id)
    assert status == "FINISHED"
    [(logged,)] = server.query(
        "SELECT count(*) FROM metrics WHERE run_uuid = %s AND key = 'train/loss'", run.info.run_id
    )
    assert logged == 10  # steps 0, 2, ..., 18
    config = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))).read_text()
    recorded = json.dumps([run.data.params, run.data.tags]) + config
    for credential in (secret, server.db_password()):
        assert credential not in recorded
    # Nor anywhere else a URI could land: the run's name and tags, its files (tracking.json, the log, Hydra's saved
    # config, run_config.json), and what the command printed.
    run_dir = Path(run.data.tags["lmlab.run_dir"])
    assert (run_dir / "tracking.json").is_file() and (run_dir / "train.log").is_file()
    for where, text in [
        *((str(p), p.read_text(errors="replace")) for p in run_dir.rglob("*") if p.suffix in TEXT_SUFFIXES),
        ("stdout", done.stdout),
        ("stderr", done.stderr),
        ("run name", run.info.run_name),
        ("tags", json.dumps(run.data.tags)),
    ]:
        assert secret not in text, f"the password is in {where}: {text[max(0, text.find(secret) - 300) :][:400]}"
    assert "alice:***@" in (run_dir / "tracking.json").read_text()


def test_training_goes_on_while_the_server_is_killed_and_every_metric_arrives(tmp_path, server):
    steps = 400
    overrides = [f"trainer.max_steps={steps}", "trainer.log_every_n_steps=2", "trainer.val_check_interval=200"]
    cmd, env = _train(tmp_path, server, *overrides, "experiment=outage")
    job = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    client = MlflowClient(server.uri)
    try:
        deadline = time.monotonic() + 240
        run = None
        while time.monotonic() < deadline and job.poll() is None:
            experiment = client.get_experiment_by_name("lmlab")
            runs = experiment and client.search_runs([experiment.experiment_id], "tags.`lmlab.run_dir` LIKE '%outage%'")
            if runs and len(client.get_metric_history(runs[0].info.run_id, "train/loss")) >= 20:
                run = runs[0]
                break
            time.sleep(0.5)
        assert run is not None and job.poll() is None, "the run ended before the server could be killed"
        server.kill_mlflow()
        pending = Path(run.data.tags["lmlab.run_dir"]) / PENDING_FILE
        deadline = time.monotonic() + 60
        while not pending.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        # Training goes on (or has already finished) with its metrics kept; whether it is still running now is
        # the machine's speed, not the property under test.
        assert pending.exists(), "training should go on, keeping its metrics"
        server.script("start")
        _, stderr = job.communicate(timeout=600)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, stderr[-3000:]
    if pending.exists():  # the run ended before the server was back: the command delivers the rest
        deliver = [sys.executable, "-m", "lmlab.tracking.deliver", str(pending.parent)]
        assert subprocess.run(deliver, cwd=ROOT, env=env, timeout=120).returncode == 0
    assert not pending.exists()
    run = client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED"
    logged = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert len(logged) == len(set(logged)) == steps // 2 and max(logged) >= steps - 2, "every logged step, once"
