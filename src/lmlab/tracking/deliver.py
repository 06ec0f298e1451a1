"""Deliver the tracking writes a run kept while its backend was unavailable:
`python -m lmlab.tracking.deliver RUN_DIR [RUN_DIR ...]` (rerunning the job delivers them too)."""

from __future__ import annotations

import argparse
import json
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
        tracking_uri = json.loads((run_dir / RUN_FILE).read_text())["tracking_uri"]
    except (OSError, ValueError, KeyError) as err:
        raise SystemExit(f"{run_dir / RUN_FILE}: cannot read the run's tracking URI ({err})") from None
    shown = redact(tracking_uri)
    count = sum(1 for line in pending.read_text().splitlines() if line.strip())
    if BufferedClient(tracking_uri, pending).deliver(force=True):
        print(f"{run_dir}: delivered {count} kept writes to {shown}")
        return True
    print(f"{run_dir}: {shown} is still unavailable; the writes stay in {pending}", file=sys.stderr)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmlab.tracking.deliver", description=__doc__)
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run output dirs holding mlflow_pending.jsonl")
    args = parser.parse_args(argv)
    results = [deliver(run_dir) for run_dir in args.run_dirs]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
