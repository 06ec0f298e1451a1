"""A tracking backend that goes away mid-run: writes are kept in the run dir, in order, and delivered once it is
back (by the run itself, by the next run of the job, or by `python -m lmlab.tracking.deliver`)."""

from __future__ import annotations

import json
import socket

import pytest
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lmlab.tracking import deliver as deliver_module
from lmlab.tracking import mlflow_run
from lmlab.tracking.buffered import PENDING_FILE, BufferedClient
from lmlab.tracking.mlflow_run import RUN_FILE


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("x")).info.run_id
    return uri, client, run_id


def _outage(monkeypatch, buffered: BufferedClient, error: Exception) -> list[str]:
    """Make every write through `buffered` fail with `error` until the returned list gets an item."""
    ended: list[str] = []
    real = buffered._client

    class Down:
        def __getattr__(self, name):
            if not ended and name in ("log_batch", "set_tag", "set_terminated"):

                def fail(*args, **kwargs):
                    raise error

                return fail
            return getattr(real, name)

    monkeypatch.setattr(buffered, "_client", Down())
    return ended


def _steps(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "loss"))


@pytest.mark.parametrize(
    "error",
    [
        MlflowException("database is locked", error_code="TEMPORARILY_UNAVAILABLE"),
        MlflowException("API request to http://127.0.0.1:5001 failed: Connection refused"),  # INTERNAL_ERROR
        ConnectionRefusedError("Connection refused"),
    ],
    ids=["sqlite-locked", "server-down", "refused"],
)
def test_writes_during_an_outage_are_kept_and_delivered_in_order_once_it_ends(store, tmp_path, monkeypatch, error):
    uri, client, run_id = store
    buffered = BufferedClient(uri, tmp_path / "run" / PENDING_FILE, retry_s=0)
    log = lambda step: buffered.log_batch(run_id, metrics=[Metric("loss", 1.0 / (step + 1), 1000 + step, step)])  # noqa: E731
    log(0)
    ended = _outage(monkeypatch, buffered, error)
    for step in range(1, 5):
        log(step)  # training goes on: nothing raises
    buffered.set_terminated(run_id, status="FINISHED")
    assert _steps(client, run_id) == [0] and buffered.pending.is_file()
    assert len(buffered.pending.read_text().splitlines()) == 5
    ended.append("back")
    log(5)  # the next write delivers what was kept first
    assert _steps(client, run_id) == [0, 1, 2, 3, 4, 5] and not buffered.pending.exists()
    assert client.get_run(run_id).info.status == "FINISHED"


def test_an_error_that_is_not_an_outage_is_raised_not_kept(store, tmp_path):
    uri, _, _ = store
    buffered = BufferedClient(uri, tmp_path / PENDING_FILE)
    with pytest.raises(MlflowException, match="not found|does not exist"):
        buffered.set_tag("0" * 32, "k", "v")  # no such run: a caller's mistake, not an outage
    assert not buffered.pending.exists()


def test_the_deliver_command_sends_what_a_finished_run_kept(store, tmp_path, monkeypatch, capsys):
    uri, client, run_id = store
    run_dir = tmp_path / "run"
    buffered = BufferedClient(uri, run_dir / PENDING_FILE)
    _outage(monkeypatch, buffered, ConnectionRefusedError("refused"))
    buffered.log_batch(run_id, metrics=[Metric("loss", 0.5, 1, 7)])
    buffered.set_tag(run_id, "lmlab.stopped_at_step", "7")
    buffered.set_terminated(run_id, status="KILLED")
    (run_dir / RUN_FILE).write_text(json.dumps({"tracking_uri": uri, "run_id": run_id}))
    assert deliver_module.main([str(run_dir)]) == 0
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["lmlab.stopped_at_step"] == "7"
    assert _steps(client, run_id) == [7]
    assert not (run_dir / PENDING_FILE).exists() and "delivered 3 kept writes" in capsys.readouterr().out
    assert deliver_module.main([str(run_dir)]) == 0  # nothing left: a second delivery sends nothing twice
    assert _steps(client, run_id) == [7]


def test_the_deliver_command_names_an_unavailable_store_without_its_password(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / PENDING_FILE).write_text(json.dumps({"method": "set_tag", "args": ["0" * 32, "k", "v"], "kwargs": {}}))
    uri = f"http://alice:s3cret@127.0.0.1:{_free_port()}"
    (run_dir / RUN_FILE).write_text(json.dumps({"tracking_uri": uri, "run_id": "0" * 32}))
    assert deliver_module.main([str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert "http://alice:***@127.0.0.1" in err and "s3cret" not in err
    assert (run_dir / PENDING_FILE).exists()


def test_a_corrupt_kept_line_is_named_and_what_was_delivered_is_not_sent_again(store, tmp_path):
    uri, client, run_id = store
    pending = tmp_path / PENDING_FILE
    good = BufferedClient(uri, pending)
    good._keep("log_batch", (run_id,), {"metrics": [Metric("loss", 1.0, 1, 0)]})
    with open(pending, "a") as f:
        f.write("{not json\n")
    with pytest.raises(ValueError, match=rf"{PENDING_FILE}:2: not a kept tracking write"):
        good.deliver(force=True)
    assert _steps(client, run_id) == [0] and pending.read_text() == "{not json\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_store_that_never_answers_is_a_clear_error_naming_it_without_its_password(tmp_path, monkeypatch):
    monkeypatch.setattr(mlflow_run, "CONNECT_WAIT_S", 0.0)
    uri = f"http://alice:s3cret@127.0.0.1:{_free_port()}"  # nothing listens there
    with pytest.raises(mlflow_run.TrackingUnavailable) as raised:
        mlflow_run.open_run(
            uri,
            experiment="x",
            artifact_location="",
            run_dir=tmp_path / "run",
            run_name="run",
            tags={},
            params={},
            resume=False,
        )
    message = str(raised.value)
    assert "http://alice:***@127.0.0.1" in message and "s3cret" not in message
    assert "logger=mlflow" in message
    assert not (tmp_path / "run" / RUN_FILE).exists()


def test_a_store_that_answers_after_a_while_is_waited_for(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(mlflow_run, "CONNECT_RETRY_S", 0.0)
    refusals = iter([ConnectionRefusedError("Connection refused")] * 2)
    real = MlflowClient.search_experiments

    def restarting(self, *args, **kwargs):
        if (refusal := next(refusals, None)) is not None:
            raise refusal
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "search_experiments", restarting)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run = mlflow_run.open_run(
        uri,
        experiment="x",
        artifact_location="",
        run_dir=tmp_path / "run",
        run_name="run",
        tags={},
        params={"p": "1"},
        resume=False,
    )
    assert MlflowClient(uri).get_run(run.run_id).data.params == {"p": "1"}
    assert sum("does not answer" in r.getMessage() for r in caplog.records) == 1  # said once, not every retry


def test_deliver_takes_the_password_from_the_environment_when_the_run_recorded_it_redacted(monkeypatch):
    from lmlab.tracking.deliver import _with_password

    assert _with_password("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:s3cret@host:5001")
    assert _with_password("http://alice:***@host:5001") == "http://alice:s3cret@host:5001"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:s3cret@other:5001")
    with pytest.raises(SystemExit, match=r"http://alice:\*\*\*@host:5001 was recorded without its password") as no:
        _with_password("http://alice:***@host:5001")
    assert "s3cret" not in str(no.value)
