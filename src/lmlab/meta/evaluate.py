"""Meta-test: every method adapts with the same number of steps to the same episodes (eval_seed, so paired across
methods and seeds), its inner learning rate chosen on meta-val episodes; accuracy mean and 95% CI over episodes."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from lmlab.meta.algorithms import MetaAlgorithm
from lmlab.meta.algorithms.base import EpisodeScore
from lmlab.meta.config import MetaTestConfig
from lmlab.meta.episodes import EpisodeSet
from lmlab.stats import mean_ci

log = logging.getLogger(__name__)


@dataclass
class MetaTestResult:
    inner_lr: float | None  # chosen on meta-val; None when adaptation has no learning rate or learned its own
    val_accuracy_by_lr: dict[float, float]
    scores: list[EpisodeScore]

    def metrics(self) -> dict[str, float]:
        acc = mean_ci([s.accuracy for s in self.scores])
        out = {"test/acc": acc.mean, "test/acc_ci95": acc.half_width, "test/episodes": float(acc.n)}
        losses = torch.tensor([s.query_losses for s in self.scores], dtype=torch.float64).mean(0)
        for step, loss in enumerate(losses.tolist()):
            out[f"test/query_loss_step{step}"] = loss
        for lr, val_acc in self.val_accuracy_by_lr.items():
            out[f"lr_search/val_acc_at_{lr:g}"] = val_acc
        if self.inner_lr is not None:
            out["test/inner_lr"] = self.inner_lr
        return out

    def write_episodes(self, path: Path, episodes: EpisodeSet) -> None:
        """One row per meta-test episode: its classes, accuracy and query loss per adaptation step (for paired
        comparisons between runs)."""
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            steps = len(self.scores[0].query_losses)
            writer.writerow(["episode", "classes", "correct", "total", *(f"query_loss_step{k}" for k in range(steps))])
            for i, score in enumerate(self.scores):
                classes = "|".join(episodes[i].classes)
                writer.writerow([i, classes, score.correct, score.total, *(f"{x:.5f}" for x in score.query_losses)])


def _scores(algorithm: MetaAlgorithm, episodes: EpisodeSet, steps: int, lr, device: torch.device) -> list[EpisodeScore]:
    return [algorithm.score(episodes[i].to(device), steps, lr) for i in range(len(episodes))]


def meta_test(algorithm: MetaAlgorithm, val: EpisodeSet, test: EpisodeSet, cfg: MetaTestConfig) -> MetaTestResult:
    """Choose the inner learning rate on `val` (methods adapting by gradient at one rate), then score `test`."""
    device = next(algorithm.parameters()).device
    algorithm.eval()
    by_lr: dict[float, float] = {}
    lr: float | None = None
    own = algorithm.inner_lrs()
    if algorithm.adapts_by_gradient and isinstance(own, float):
        # The grid, and the rate the method trained its inner loop with (a method is never denied its own).
        for candidate in sorted({*map(float, cfg.inner_lrs), own}):
            scores = _scores(algorithm, val, cfg.steps, float(candidate), device)
            by_lr[float(candidate)] = sum(s.accuracy for s in scores) / len(scores)
            log.info("meta-val accuracy at inner lr %g: %.4f", candidate, by_lr[float(candidate)])
        lr = max(by_lr, key=lambda k: by_lr[k])
    chosen = lr if lr is not None else algorithm.inner_lrs()
    result = MetaTestResult(lr, by_lr, _scores(algorithm, test, cfg.steps, chosen, device))
    metrics = result.metrics()
    adaptation = (
        f"inner lr {lr:g}, {cfg.steps} steps"
        if lr is not None
        else f"learned inner lrs, {cfg.steps} steps"
        if algorithm.adapts_by_gradient
        else "prototypes"
    )
    log.info(
        "meta-test: accuracy %.4f ± %.4f over %d episodes (%s)",
        metrics["test/acc"],
        metrics["test/acc_ci95"],
        len(test),
        adaptation,
    )
    return result
