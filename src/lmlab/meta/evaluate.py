"""Meta-test: every method adapts with the same number of steps to the same episodes (eval_seed, so paired across
methods and seeds), its inner learning rate chosen on meta-val episodes (class episodes: by accuracy; text
domains: by the query loss after adaptation); accuracy (of query examples, or of next tokens) mean and 95% CI over
episodes, the query loss after every adaptation step, and for text domains its perplexity."""

from __future__ import annotations

import csv
import logging
import math
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
    val_by_lr: dict[float, float]  # the meta-val selection metric (higher is better) at each candidate
    scores: list[EpisodeScore]
    kind: str = "classes"

    def metrics(self) -> dict[str, float]:
        acc = mean_ci([s.accuracy for s in self.scores])
        out = {"test/acc": acc.mean, "test/acc_ci95": acc.half_width, "test/episodes": float(acc.n)}
        losses = torch.tensor([s.query_losses for s in self.scores], dtype=torch.float64).mean(0)
        for step, loss in enumerate(losses.tolist()):
            out[f"test/query_loss_step{step}"] = loss
            if self.kind == "domains":
                out[f"test/ppl_step{step}"] = math.exp(loss)
        if self.kind == "domains":
            out["test/ppl_before"], out["test/ppl"] = out["test/ppl_step0"], out[f"test/ppl_step{len(losses) - 1}"]
        name = "val_acc" if self.kind == "classes" else "val_loss"
        for lr, value in self.val_by_lr.items():
            out[f"lr_search/{name}_at_{lr:g}"] = value if self.kind == "classes" else -value
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
    kind = algorithm.learner.kind
    algorithm.eval()
    by_lr: dict[float, float] = {}
    lr: float | None = None
    own = algorithm.inner_lrs()
    if algorithm.adapts_by_gradient and isinstance(own, float):
        # The grid, and the rate the method trained its inner loop with (a method is never denied its own).
        for candidate in sorted({*map(float, cfg.inner_lrs), own}):
            scores = _scores(algorithm, val, cfg.steps, float(candidate), device)
            by_lr[float(candidate)] = _selection(scores, kind)
            log.info("meta-val %s at inner lr %g: %.4f", _SELECTION[kind], candidate, abs(by_lr[float(candidate)]))
        lr = max(by_lr, key=lambda k: by_lr[k])
    chosen = lr if lr is not None else algorithm.inner_lrs()
    result = MetaTestResult(lr, by_lr, _scores(algorithm, test, cfg.steps, chosen, device), kind)
    metrics = result.metrics()
    adaptation = (
        f"inner lr {lr:g}, {cfg.steps} steps"
        if lr is not None
        else f"learned inner lrs, {cfg.steps} steps"
        if algorithm.adapts_by_gradient
        else "prototypes"
    )
    log.info(
        "meta-test: accuracy %.4f ± %.4f over %d episodes (%s)%s",
        metrics["test/acc"],
        metrics["test/acc_ci95"],
        len(test),
        adaptation,
        f"; perplexity {metrics['test/ppl_before']:.2f} before, {metrics['test/ppl']:.2f} after"
        if kind == "domains"
        else "",
    )
    return result


_SELECTION = {"classes": "accuracy", "domains": "query loss"}


def _selection(scores: list[EpisodeScore], kind: str) -> float:
    """The meta-val figure an inner lr is chosen by, higher is better: accuracy, or minus the adapted query loss."""
    if kind == "classes":
        return sum(s.accuracy for s in scores) / len(scores)
    return -sum(s.query_losses[-1] for s in scores) / len(scores)
