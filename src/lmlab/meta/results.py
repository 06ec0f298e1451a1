"""The results tables of a meta-learning sweep, from MLflow alone. Class episodes (few-shot): per method, meta-test
accuracy over seeds and the paired difference to the plain fine-tuning baseline over the same episodes and seeds.
Text domains (MetaGPT): per method, query perplexity before and after adaptation, and the paired change of the
adapted perplexity against the same LM trained on the same episodes without meta-learning (multitask)."""

from __future__ import annotations

import csv
import math
import tempfile
from collections import defaultdict
from collections.abc import Callable
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


def configuration(run: Run) -> tuple[str, int, int]:
    """What a run trained: its meta algorithm, inner steps and outer (meta-) steps."""
    params = run.data.params
    return (
        run.data.tags.get("lmlab.meta", "?"),
        int(params.get("meta.inner_steps", 0)),
        int(params.get("trainer.max_steps", 0)),
    )


def newest_per_method_and_seed(runs: list[Run]) -> list[Run]:
    """Of `runs` (newest first), the newest of each (configuration, seed)."""
    kept: dict[tuple[tuple[str, int, int], str | None], Run] = {}
    for run in runs:
        kept.setdefault((configuration(run), run.data.params.get("seed")), run)
    return list(kept.values())


def training_work(run: Run) -> float | None:
    """A text-domain run's training compute in multitask steps, as its algorithm counts it (`training_work`)."""
    method, inner, steps = configuration(run)
    params = run.data.params
    return algorithm_class(method).training_work(
        steps=steps,
        inner_steps=inner,
        support_rows=int(params.get("episodes.support_rows", 0)),
        query_rows=int(params.get("episodes.query_rows", 0)),
    )


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
    """A markdown table, one row per configuration (meta algorithm, inner steps, meta-steps) of `runs` (text domains;
    seeds pooled): query perplexity before and after adaptation (the exponential of the mean per-episode query loss),
    and the paired change of the adapted perplexity against `multitask` of the same seed over the same episodes
    (exp of the mean loss difference) — trained for the same meta-steps, and for the same training work."""
    by_config: dict[tuple[str, int, int], list[Run]] = defaultdict(list)
    for run in runs:
        by_config[configuration(run)].append(run)
    losses = {run.info.run_id: adapted_losses(client, run) for run in runs}
    baselines = [r for r in runs if configuration(r)[0] == DOMAINS_BASELINE]
    steps_done = int(next(iter(runs)).data.params.get("eval.steps", 0))
    lines = [
        f"| method | seeds | query ppl before adaptation | after {steps_done} steps (95% CI over seeds) | "
        f"Δ adapted ppl vs {DOMAINS_BASELINE}, same meta-steps (paired) | same work (paired) | inner lr | "
        "inner steps | meta-steps | work (multitask steps) | wall |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (method, inner, steps), config_runs in sorted(by_config.items(), key=lambda kv: _mean(kv[1], "test/ppl")):
        before = mean_ci([r.data.metrics["test/ppl_before"] for r in config_runs])
        after = mean_ci([r.data.metrics["test/ppl"] for r in config_runs])
        work = training_work(config_runs[0])
        same_steps = same_work = "—"
        if method != DOMAINS_BASELINE:
            same_steps = _paired_change(losses, config_runs, baselines, _same_steps)
            same_work = _paired_change(losses, config_runs, baselines, _same_work)
        lrs = sorted({r.data.tags.get("lmlab.meta_test_inner_lr", "learned") for r in config_runs})
        wall = sum((r.info.end_time - r.info.start_time) / 60000 for r in config_runs) / len(config_runs)
        inner_cell = str(inner) if algorithm_class(method).trains_with_inner_loop else "—"
        work_cell = "—" if work is None else f"{work:.0f}"
        lines.append(
            f"| {method} | {after.n} | {before} | {after} | {same_steps} | {same_work} | {', '.join(lrs)} | "
            f"{inner_cell} | {steps if method != BASELINE else 0} | {work_cell} | {wall:.1f} min |"
        )
    return "\n".join(lines)


def _same_steps(run: Run, base: Run) -> bool:
    return configuration(base)[2] == configuration(run)[2]


def _same_work(run: Run, base: Run) -> bool:
    work = training_work(run)
    return work is not None and training_work(base) == work


def _paired_change(
    losses: dict[str, list[float]], runs: list[Run], baselines: list[Run], matches: Callable[[Run, Run], bool]
) -> str:
    """The adapted perplexity's change against the baseline run of the same seed that `matches`, paired over the
    same episodes: exp of the mean loss difference, with its 95% interval; "—" when no baseline matches."""
    differences: list[float] = []
    for run in runs:
        seed = run.data.params.get("seed")
        base = next((b for b in baselines if b.data.params.get("seed") == seed and matches(run, b)), None)
        if base is not None and len(losses[base.info.run_id]) == len(losses[run.info.run_id]):
            differences += [a - b for a, b in zip(losses[run.info.run_id], losses[base.info.run_id], strict=True)]
    if not differences:
        return "—"
    d = mean_ci(differences)
    low, mid, high = (100 * (math.exp(x) - 1) for x in (d.mean - d.half_width, d.mean, d.mean + d.half_width))
    return f"{mid:+.1f}% [{low:+.1f}, {high:+.1f}]"


def _mean(runs: list[Run], metric: str) -> float:
    return sum(r.data.metrics[metric] for r in runs) / len(runs)
