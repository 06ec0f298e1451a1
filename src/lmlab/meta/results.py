"""The results tables of a meta-learning sweep, from MLflow alone. Class episodes (few-shot): per method, meta-test
accuracy over seeds and the paired difference to the plain fine-tuning baseline over the same episodes and seeds.
Text domains (MetaGPT): per method, query perplexity before and after adaptation, and the paired change of the
adapted perplexity against the same LM trained on the same episodes without meta-learning (multitask)."""

from __future__ import annotations

import csv
import math
import tempfile
from collections import defaultdict
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from lmlab.meta.algorithms import algorithm_class
from lmlab.stats import mean_ci

BASELINE = "finetune"
# Text domains: the causal LM of equal outer steps over the same episodes, without meta-learning.
DOMAINS_BASELINE = "multitask"
EPISODES_FILE = "meta_test_episodes.csv"


def episode_rows(client: MlflowClient, run: Run) -> list[dict[str, str]]:
    """The run's per-episode meta-test rows, from its artifact."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(client.download_artifacts(run.info.run_id, EPISODES_FILE, tmp))
        with open(path, newline="") as f:
            return list(csv.DictReader(f))


def episode_accuracies(client: MlflowClient, run: Run) -> list[float]:
    """The run's per-episode meta-test accuracies."""
    return [int(row["correct"]) / int(row["total"]) for row in episode_rows(client, run)]


def adapted_losses(client: MlflowClient, run: Run) -> list[float]:
    """The run's per-episode query loss after the last adaptation step."""
    rows = episode_rows(client, run)
    last = max(
        (k for k in rows[0] if k.startswith("query_loss_step")), key=lambda k: int(k.removeprefix("query_loss_step"))
    )
    return [float(row[last]) for row in rows]


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
    for method, method_runs in sorted(by_method.items(), key=lambda kv: -_mean(kv[1], "test/acc")):
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


def domains_table(client: MlflowClient, runs: list[Run]) -> str:
    """A markdown table, one row per `meta` algorithm of `runs` (text domains; seeds pooled): query perplexity before
    and after adaptation (the exponential of the mean per-episode query loss), and the paired change of the adapted
    perplexity against `multitask` of the same seed over the same episodes (exp of the mean loss difference)."""
    by_method: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_method[run.data.tags["lmlab.meta"]].append(run)
    losses = {run.info.run_id: adapted_losses(client, run) for run in runs}
    baseline = {r.data.params.get("seed"): losses[r.info.run_id] for r in by_method.get(DOMAINS_BASELINE, [])}
    steps_done = int(next(iter(runs)).data.params.get("eval.steps", 0))
    lines = [
        f"| method | seeds | query ppl before adaptation | after {steps_done} steps (95% CI over seeds) | "
        f"Δ adapted ppl vs {DOMAINS_BASELINE} (paired) | inner lr | meta-steps | wall |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, method_runs in sorted(by_method.items(), key=lambda kv: _mean(kv[1], "test/ppl")):
        before = mean_ci([r.data.metrics["test/ppl_before"] for r in method_runs])
        after = mean_ci([r.data.metrics["test/ppl"] for r in method_runs])
        differences = []
        for run in method_runs:
            base = baseline.get(run.data.params.get("seed"))
            if base is not None and method != DOMAINS_BASELINE and len(base) == len(losses[run.info.run_id]):
                differences += [a - b for a, b in zip(losses[run.info.run_id], base, strict=True)]
        delta = "—"
        if differences:
            d = mean_ci(differences)
            low, mid, high = (100 * (math.exp(x) - 1) for x in (d.mean - d.half_width, d.mean, d.mean + d.half_width))
            delta = f"{mid:+.1f}% [{low:+.1f}, {high:+.1f}]"
        lrs = sorted({r.data.tags.get("lmlab.meta_test_inner_lr", "learned") for r in method_runs})
        steps = max(int(r.data.params.get("trainer.max_steps", 0)) for r in method_runs) if method != BASELINE else 0
        wall = sum((r.info.end_time - r.info.start_time) / 60000 for r in method_runs) / len(method_runs)
        lines.append(
            f"| {method} | {after.n} | {before} | {after} | {delta} | {', '.join(lrs)} | {steps} | {wall:.1f} min |"
        )
    return "\n".join(lines)


def _mean(runs: list[Run], metric: str) -> float:
    return sum(r.data.metrics[metric] for r in runs) / len(runs)
