"""Means with 95% confidence intervals over seeds or episodes, and paired differences, for reports.

With a handful of seeds the interval uses Student's t (the normal 1.96 would understate it by half at n = 3)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

# Two-sided 95% quantiles of Student's t by degrees of freedom (1..30); beyond that the normal's 1.96 is within 2%.
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t95(dof: int) -> float:
    if dof < 1:
        raise ValueError(f"a confidence interval needs at least 2 values (degrees of freedom {dof})")
    return _T95[dof - 1] if dof <= len(_T95) else 1.96


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
