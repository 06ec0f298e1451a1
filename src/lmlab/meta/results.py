"""The few-shot results table of a meta-learning sweep, from MLflow alone: per method, meta-test accuracy over
seeds, and the paired difference to the plain fine-tuning baseline over the same episodes and seeds."""

from __future__ import annotations

import csv
import tempfile
from collections import defaultdict
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from lmlab.meta.algorithms import algorithm_class
from lmlab.stats import mean_ci

BASELINE = "finetune"
EPISODES_FILE = "meta_test_episodes.csv"


def episode_accuracies(client: MlflowClient, run: Run) -> list[float]:
    """The run's per-episode meta-test accuracies, from its artifact."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(client.download_artifacts(run.info.run_id, EPISODES_FILE, tmp))
        with open(path, newline="") as f:
            return [int(row["correct"]) / int(row["total"]) for row in csv.DictReader(f)]


def newest_per_method_and_seed(runs: list[Run]) -> list[Run]:
    """Of `runs` (newest first), the newest of each (meta algorithm, seed)."""
    kept: dict[tuple[str, str | None], Run] = {}
    for run in runs:
        kept.setdefault((run.data.tags.get("lmlab.meta", "?"), run.data.params.get("seed")), run)
    return list(kept.values())


def fewshot_table(client: MlflowClient, runs: list[Run]) -> str:
    """A markdown table, one row per `meta` algorithm of `runs` (their seeds pooled)."""
    by_method: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_method[run.data.tags["lmlab.meta"]].append(run)
    episodes = {run.info.run_id: episode_accuracies(client, run) for run in runs}
    baseline = {run.data.params.get("seed"): episodes[run.info.run_id] for run in by_method.get(BASELINE, [])}
    lines = [
        f"| method | seeds | meta-test acc (95% CI over seeds) | episodes' CI | Δ vs {BASELINE} (paired) | inner lr "
        "| meta-steps | wall |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, method_runs in sorted(by_method.items(), key=lambda kv: -_mean_acc(kv[1])):
        acc = mean_ci([r.data.metrics["test/acc"] for r in method_runs])
        episode_ci = max(r.data.metrics.get("test/acc_ci95", float("nan")) for r in method_runs)
        differences = []
        for run in method_runs:
            # Runs of any seed are paired with the baseline on the same episodes; the baseline trains nothing, so
            # its seeds agree and any one of them serves.
            base = baseline.get(run.data.params.get("seed")) or next(iter(baseline.values()), None)
            if base is not None and method != BASELINE and len(base) == len(episodes[run.info.run_id]):
                differences += [a - b for a, b in zip(episodes[run.info.run_id], base, strict=True)]
        delta = str(mean_ci(differences)) if differences else "—"
        untagged = "learned" if algorithm_class(method).adapts_by_gradient else "none (prototypes)"
        lrs = sorted({r.data.tags.get("lmlab.meta_test_inner_lr", untagged) for r in method_runs})
        steps = max(int(r.data.params.get("trainer.max_steps", 0)) for r in method_runs) if method != BASELINE else 0
        wall = sum((r.info.end_time - r.info.start_time) / 60000 for r in method_runs) / len(method_runs)
        lines.append(
            f"| {method} | {acc.n} | {acc} | ± {episode_ci:.3f} | {delta} | {', '.join(lrs)} | {steps} | "
            f"{wall:.1f} min |"
        )
    return "\n".join(lines)


def _mean_acc(runs: list[Run]) -> float:
    return sum(r.data.metrics["test/acc"] for r in runs) / len(runs)
