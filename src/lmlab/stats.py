"""Means with 95% confidence intervals over seeds or episodes, and paired differences, for reports: one convention
for every table (the mean ± the half-width of its two-sided 95% Student-t interval).

With a handful of seeds the interval uses Student's t (the normal 1.96 would understate it by half at n = 3); its
quantiles come from scipy.stats."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def t95(dof: int) -> float:
    """The two-sided 95% quantile of Student's t with `dof` degrees of freedom."""
    if dof < 1:
        raise ValueError(f"a confidence interval needs at least 2 values (degrees of freedom {dof})")
    from scipy import stats  # imported here: composing a config never needs it

    return float(stats.t.ppf(0.975, dof))


@dataclass(frozen=True)
class Estimate:
    mean: float
    half_width: float  # of the 95% interval; nan with a single value
    n: int

    def __str__(self) -> str:
        if math.isnan(self.half_width):
            return f"{self.mean:.3f} (n=1)"
        return f"{self.mean:.3f} ± {self.half_width:.3f}"

    @property
    def excludes_zero(self) -> bool:
        return not math.isnan(self.half_width) and abs(self.mean) > self.half_width


def mean_ci(values: Sequence[float]) -> Estimate:
    """Mean and the half-width of its 95% t interval."""
    if not values:
        raise ValueError("no values to estimate from")
    if len(values) == 1:
        return Estimate(float(values[0]), math.nan, 1)
    half = t95(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return Estimate(statistics.fmean(values), half, len(values))


def paired_difference(a: dict[int, float], b: dict[int, float]) -> Estimate:
    """a - b over the seeds both have (a fine-tuning seed fixes data order and head init for both)."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError("no seed in common")
    return mean_ci([a[s] - b[s] for s in seeds])
