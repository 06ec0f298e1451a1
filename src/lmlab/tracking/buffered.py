"""Tracking that never stops training: a write the tracking backend cannot take (server down, SQLite locked past
its busy timeout) is kept, in order, in the run dir's `mlflow_pending.jsonl` and delivered before the next write
once the backend answers again. Whatever is still pending when the run ends is delivered by the next run of the
same job, or by `python -m lmlab.tracking.deliver RUN_DIR`."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from requests.exceptions import RequestException

from lmlab.atomic_file import write_text_atomic
from lmlab.tracking.identity import redact

log = logging.getLogger(__name__)

PENDING_FILE = "mlflow_pending.jsonl"
# Writes that can wait for the backend; reads (get_run, search_runs...) go straight through.
WRITES = (
    "log_batch",
    "log_metric",
    "log_param",
    "set_tag",
    "set_terminated",
    "update_run",
    "log_artifact",
    "log_artifacts",
)
# MLflow's error codes for a backend that is there but cannot answer now; any other error is the caller's to see.
UNAVAILABLE = ("TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED", "ABORTED")
# A training process must not hang for minutes inside one logging call (MLflow's defaults: 7 retries, 120 s timeout).
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
    # MLflow prints "View run ... at: <tracking URI>/#/..." when a run ends, password and all; lmlab says where a
    # run is itself, redacted.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}

# The MLflow entities a kept write may carry, by the fields that rebuild them.
_ENTITIES: dict[str, tuple[type, tuple[str, ...]]] = {
    "metric": (Metric, ("key", "value", "timestamp", "step")),
    "param": (Param, ("key", "value")),
    "tag": (RunTag, ("key", "value")),
}


def use_quick_http() -> None:
    """HTTP_DEFAULTS for this process, unless the user set those variables (the URL printing always)."""
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"


def outage_reason(err: BaseException) -> str:
    """An outage error's first line for a log message, without credentials (the text may hold the URI)."""
    return redact(str(err).splitlines()[0])[:300]


def backend_unavailable(err: BaseException) -> bool:
    """Whether `err` says the store cannot answer now (a server down, an SQLite file another process holds locked),
    as opposed to refusing the request."""
    if isinstance(err, RequestException | ConnectionError | TimeoutError):
        return True
    if "database is locked" in str(err).split("\n", 1)[0]:  # SQLite's busy timeout ran out (MLflow's or SQLAlchemy's)
        return True
    return isinstance(err, MlflowException) and err.error_code in UNAVAILABLE


class BufferedClient:
    """An `MlflowClient` whose writes are kept in `pending` while the backend is unavailable (see module doc).
    After a failure, no delivery is tried for `retry_s` seconds, so an outage costs training one failed call."""

    def __init__(self, tracking_uri: str, pending: Path, retry_s: float = 20.0) -> None:
        use_quick_http()
        self._client = MlflowClient(tracking_uri)
        self.tracking_uri = tracking_uri
        self.pending = Path(pending)
        self.retry_s = retry_s
        self._retry_at = 0.0

    def __getattr__(self, name: str) -> Any:
        if name in WRITES:
            return lambda *args, **kwargs: self._write(name, args, kwargs)
        return getattr(self._client, name)

    def _write(self, method: str, args: tuple, kwargs: dict) -> None:
        if self.pending.exists() and not self.deliver():
            self._keep(method, args, kwargs)
            return
        try:
            getattr(self._client, method)(*args, **kwargs)
        except Exception as err:
            if not backend_unavailable(err):
                raise
            self._backend_failed(err)
            self._keep(method, args, kwargs)

    def deliver(self, force: bool = False) -> bool:
        """Send every kept write, oldest first; True when nothing is left pending."""
        if not self.pending.exists():
            return True
        if not force and time.monotonic() < self._retry_at:
            return False
        lines = self.pending.read_text().splitlines()
        done = 0
        try:
            for number, line in enumerate(lines, 1):
                if line.strip():
                    method, args, kwargs = _decode(self.pending, number, line)
                    getattr(self._client, method)(*args, **kwargs)
                done += 1
        except Exception as err:
            # What was delivered is never delivered twice.
            write_text_atomic(self.pending, "".join(f"{line}\n" for line in lines[done:]))
            if not backend_unavailable(err):
                raise
            self._backend_failed(err)
            return False
        self.pending.unlink()
        log.info("Delivered %d kept tracking writes to %s", len(lines), redact(self.tracking_uri))
        return True

    def _backend_failed(self, err: BaseException) -> None:
        if self._retry_at == 0.0 or time.monotonic() >= self._retry_at:
            log.warning(
                "The tracking backend %s is unavailable (%s); training goes on, writes are kept in %s",
                redact(self.tracking_uri),
                outage_reason(err),
                self.pending,
            )
        self._retry_at = time.monotonic() + self.retry_s

    def _keep(self, method: str, args: tuple, kwargs: dict) -> None:
        self.pending.parent.mkdir(parents=True, exist_ok=True)
        with open(self.pending, "a") as f:
            f.write(json.dumps(_encode(method, args, kwargs)) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _to_json(value: Any) -> Any:
    for kind, (cls, fields) in _ENTITIES.items():
        if isinstance(value, cls):
            return {f"__{kind}__": [getattr(value, f) for f in fields]}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict) and len(value) == 1:
        [(key, fields)] = value.items()
        kind = key.strip("_")
        if key == f"__{kind}__" and kind in _ENTITIES:
            return _ENTITIES[kind][0](*fields)
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def _encode(method: str, args: tuple, kwargs: dict) -> dict:
    return {"method": method, "args": _to_json(list(args)), "kwargs": {k: _to_json(v) for k, v in kwargs.items()}}


def _decode(path: Path, number: int, line: str) -> tuple[str, list, dict]:
    try:
        record = json.loads(line)
        method, args, kwargs = record["method"], record["args"], record["kwargs"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"{path}:{number}: not a kept tracking write ({err}); nothing was delivered from here on"
        ) from None
    if method not in WRITES:
        raise ValueError(f"{path}:{number}: {method!r} is not a tracking write; expected one of {list(WRITES)}")
    return method, _from_json(args), {k: _from_json(v) for k, v in kwargs.items()}
