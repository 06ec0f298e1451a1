"""Deliver the tracking writes a run kept while its backend was unavailable:
`python -m lmlab.tracking.deliver RUN_DIR [RUN_DIR ...]` (rerunning the job delivers them too)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from lmlab.tracking.buffered import PENDING_FILE, BufferedClient
from lmlab.tracking.identity import redact
from lmlab.tracking.mlflow_run import RUN_FILE


def deliver(run_dir: Path) -> bool:
    """True when nothing of `run_dir` is left to deliver."""
    pending = run_dir / PENDING_FILE
    if not pending.exists():
        print(f"{run_dir}: nothing pending")
        return True
    try:
        recorded = json.loads((run_dir / RUN_FILE).read_text())["tracking_uri"]
    except (OSError, ValueError, KeyError) as err:
        raise SystemExit(f"{run_dir / RUN_FILE}: cannot read the run's tracking URI ({err})") from None
    tracking_uri, shown = _with_password(recorded), redact(recorded)
    count = sum(1 for line in pending.read_text().splitlines() if line.strip())
    if BufferedClient(tracking_uri, pending).deliver(force=True):
        print(f"{run_dir}: delivered {count} kept writes to {shown}")
        return True
    print(f"{run_dir}: {shown} is still unavailable; the writes stay in {pending}", file=sys.stderr)
    return False


def _with_password(recorded: str) -> str:
    """The recorded URI, or (when it was recorded without its password) MLFLOW_TRACKING_URI if that is the same
    store: the password lives only in the environment."""
    if ":***@" not in recorded:  # recorded whole (a store without a password, or a run dir from before)
        return recorded
    from_env = os.environ.get("MLFLOW_TRACKING_URI", "")
    if redact(from_env) != recorded:
        raise SystemExit(
            f"the run's tracking store {recorded} was recorded without its password; set MLFLOW_TRACKING_URI to it "
            "(with the password) and deliver again"
        )
    return from_env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmlab.tracking.deliver", description=__doc__)
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run output dirs holding mlflow_pending.jsonl")
    args = parser.parse_args(argv)
    results = [deliver(run_dir) for run_dir in args.run_dirs]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
