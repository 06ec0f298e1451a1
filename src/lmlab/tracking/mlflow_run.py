"""One MLflow run per logical job: created once, continued on resume (the run id is kept in the run dir)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from mlflow.entities import Param
from mlflow.tracking import MlflowClient

from lmlab.atomic_file import check_writable_dir, write_text_atomic
from lmlab.errors import InputError
from lmlab.file_lock import file_lock
from lmlab.tracking.buffered import PENDING_FILE, BufferedClient, backend_unavailable, outage_reason, use_quick_http
from lmlab.tracking.identity import redact

log = logging.getLogger(__name__)

RUN_FILE = "tracking.json"
_PARAM_BATCH = 100
# How long a run that is starting waits for a tracking store that does not answer, and how often it asks.
CONNECT_WAIT_S = 120.0
CONNECT_RETRY_S = 5.0
_SQLITE_HEADER = b"SQLite format 3\x00"


@dataclass
class MlflowRun:
    tracking_uri: str
    run_id: str
    run_dir: Path
    resumed: bool
    # On resume: the last step each metric was logged at, so steps replayed after a crash are not logged twice.
    logged_steps: dict[str, int] = field(default_factory=dict)

    @cached_property
    def client(self) -> BufferedClient:
        """Writes that the backend cannot take now are kept in the run dir and delivered later."""
        return BufferedClient(self.tracking_uri, self.run_dir / PENDING_FILE)

    def finish(self) -> None:
        """Mark the run FINISHED: only once its outputs are exported and logged."""
        self.end("FINISHED")

    def fail(self, reason: str) -> None:
        self.client.set_tag(self.run_id, "lmlab.failure", reason[:5000])
        self.end("FAILED")

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)
        if not self.client.deliver(force=True):
            log.warning(
                "The tracking backend %s is still unavailable: this run's last writes are kept in %s. "
                "Rerunning the job delivers them, or: python -m lmlab.tracking.deliver %s",
                redact(self.tracking_uri),
                self.client.pending,
                self.run_dir,
            )


def open_run(
    tracking_uri: str,
    *,
    experiment: str,
    artifact_location: str,
    run_dir: Path,
    run_name: str,
    tags: dict[str, str],
    params: dict[str, str],
    resume: bool,
    resume_tags: dict[str, str] | None = None,
) -> MlflowRun:
    """Continue the run recorded in `run_dir` when resuming (back to RUNNING, `resume_tags` and a resume count set,
    params untouched), else create a new one with tags and params."""
    with _store_lock(tracking_uri):
        # Creating the client builds (and for a new SQLite file, migrates) the store: one process at a time.
        client = _connect(tracking_uri)
    # Writes an earlier attempt of this job could not deliver go first, so the run continues from where it was.
    BufferedClient(tracking_uri, run_dir / PENDING_FILE).deliver(force=True)
    saved = _read_run_file(run_dir) if resume else None
    if saved is not None and saved.get("tracking_uri") == redact(tracking_uri):
        run_id = saved["run_id"]
        previous = client.get_run(run_id)
        count = int(previous.data.tags.get("lmlab.resume_count", "0")) + 1
        client.update_run(run_id, status="RUNNING")
        for key, value in {**(resume_tags or {}), "lmlab.resume_count": str(count)}.items():
            client.set_tag(run_id, key, value)
        logged = {key: max(m.step for m in client.get_metric_history(run_id, key)) for key in previous.data.metrics}
        log.info("Resuming MLflow run %s (resume #%d)", run_id, count)
        return MlflowRun(tracking_uri, run_id, run_dir, resumed=True, logged_steps=logged)

    with _store_lock(tracking_uri):
        found = client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id
            if found
            else client.create_experiment(
                experiment, artifact_location=_as_uri(artifact_location) if artifact_location else None
            )
        )
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    items = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(items), _PARAM_BATCH):
        client.log_batch(run.info.run_id, params=items[start : start + _PARAM_BATCH])
    # Recorded without its password (the environment holds it): tracking.json is as readable as the run dir.
    _write_run_file(run_dir, {"tracking_uri": redact(tracking_uri), "run_id": run.info.run_id})
    log.info("MLflow run %s in experiment %r at %s", run.info.run_id, experiment, redact(tracking_uri))
    return MlflowRun(tracking_uri, run.info.run_id, run_dir, resumed=False)


class TrackingUnavailable(ConnectionError):
    """The tracking store did not answer when a run had to be opened."""


def _connect(tracking_uri: str) -> MlflowClient:
    """A client of a store that answers. A store that is down when a run opens is waited for up to CONNECT_WAIT_S
    (a requeued job may start while its server restarts), saying so at once rather than through MLflow's silent
    minutes of retries; one that never answers is an error naming the store and what to do."""
    use_quick_http()
    check_store(tracking_uri)
    client = MlflowClient(tracking_uri)
    deadline = time.monotonic() + CONNECT_WAIT_S
    waited = False
    while True:
        try:
            client.search_experiments(max_results=1)
            return client
        except Exception as err:
            if not backend_unavailable(err):
                raise
            reason = outage_reason(err)
            if time.monotonic() >= deadline:
                raise TrackingUnavailable(
                    f"The tracking store {redact(tracking_uri)} did not answer for {CONNECT_WAIT_S:.0f} s ({reason}). "
                    "Start it (make tracking-server for logger=server), point MLFLOW_TRACKING_URI at a running one, "
                    "or use the embedded store (logger=mlflow)."
                ) from None  # the cause's text holds the URI unredacted
            if not waited:
                log.warning(
                    "The tracking store %s does not answer (%s); waiting up to %.0f s for it",
                    redact(tracking_uri),
                    reason,
                    CONNECT_WAIT_S,
                )
            waited = True
            time.sleep(CONNECT_RETRY_S)


def check_store(tracking_uri: str) -> None:
    """Refuse (InputError) a local store that cannot be used; a server's problems are outages, waited for."""
    if tracking_uri.startswith("sqlite:///"):
        check_sqlite_store(Path(tracking_uri[len("sqlite:///") :]))


def check_sqlite_store(db: Path) -> None:
    """Refuse at once an SQLite store MLflow could not use (it would retry for minutes, then fail in raw SQL)."""
    where = f"the tracking store {db} (logger.tracking_uri)"
    if db.exists():
        try:
            with open(db, "r+b") as f:
                header = f.read(16)
        except OSError as err:
            raise InputError(
                f"{where} cannot be opened for reading and writing ({err.strerror}); fix its permissions "
                f"(e.g. chmod u+rw {db}) or point logger.tracking_uri at another store"
            ) from None
        if header and header != _SQLITE_HEADER:
            raise InputError(f"{where} is not an SQLite database; move it away or point logger.tracking_uri elsewhere")
    check_writable_dir(db.parent, f"{where}: its directory")


@contextmanager
def _store_lock(tracking_uri: str) -> Iterator[None]:
    """Serialise first use of an SQLite store: parallel sweep jobs otherwise race to create its schema
    and the experiment. Other stores (a tracking server) handle concurrency themselves."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    db = Path(tracking_uri[len("sqlite:///") :])
    db.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(db.with_name(db.name + ".lock")):
        yield


def _as_uri(location: str) -> str:
    return location if "://" in location else Path(location).resolve().as_uri()


def _read_run_file(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None


def _write_run_file(run_dir: Path, content: dict) -> None:
    write_text_atomic(run_dir / RUN_FILE, json.dumps(content, indent=2))
