"""The results table of an RL sweep, from MLflow alone: per algorithm (seeds pooled), the held-out reward of the
starting policy (step 0) and at the end, the paired rise per seed, the per-token KL to the reference at the end, and
what RL cost the language model (the policy's LM loss over the reference's on ordinary text), and the competition
figures: the held-out win rate against the reference and the final checkpoint's Elo (runs from before these were
logged show "not logged")."""

from __future__ import annotations

from collections import defaultdict

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from lmlab.stats import mean_ci


def newest_per_algorithm_and_seed(runs: list[Run]) -> list[Run]:
    """Of `runs` (newest first), the newest of each (RL algorithm, seed)."""
    kept: dict[tuple[str, str | None], Run] = {}
    for run in runs:
        kept.setdefault((run.data.tags.get("lmlab.rl", "?"), run.data.params.get("seed")), run)
    return list(kept.values())


def held_out_rewards(client: MlflowClient, run: Run) -> tuple[float, float]:
    """The held-out reward at the first evaluation (the starting policy) and at the last."""
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val/reward"))
    return history[0][1], history[-1][1]


def rl_table(client: MlflowClient, runs: list[Run]) -> str:
    by_algorithm: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_algorithm[run.data.tags["lmlab.rl"]].append(run)
    lines = [
        "| algorithm | seeds | held-out reward at step 0 | at the end (95% CI over seeds) | rise (paired) | "
        "KL per token at the end | LM loss / reference's | win rate vs reference | Elo at the end | steps | wall |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, group in sorted(by_algorithm.items()):
        rewards = [held_out_rewards(client, r) for r in group]
        start, end = mean_ci([a for a, _ in rewards]), mean_ci([b for _, b in rewards])
        rise = mean_ci([b - a for a, b in rewards])
        kl = mean_ci([r.data.metrics["val/kl"] for r in group])
        lm = mean_ci([r.data.metrics["lm/loss_ratio"] for r in group])
        win, elo = (_logged(group, f"val/{name}") for name in ("win_rate", "elo"))
        steps = max(int(r.data.params.get("trainer.max_steps", 0)) for r in group)
        wall = sum((r.info.end_time - r.info.start_time) / 60000 for r in group) / len(group)
        lines.append(
            f"| {name} | {end.n} | {start} | {end} | {rise} | {kl} | {lm} | {win} | {elo} | {steps} | {wall:.1f} min |"
        )
    return "\n".join(lines)


def _logged(runs: list[Run], metric: str) -> str:
    """The mean and interval of `metric` over the runs that logged it, or "not logged" where none did."""
    values = [r.data.metrics[metric] for r in runs if metric in r.data.metrics]
    if not values:
        return "not logged"
    return str(mean_ci(values)) if len(values) == len(runs) else f"{mean_ci(values)} ({len(values)} runs)"
