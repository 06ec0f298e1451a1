"""The statistics a study report states: t intervals over seeds and paired differences."""

from __future__ import annotations

import math

import pytest

from lmlab.stats import mean_ci, paired_difference, t95


def test_the_interval_uses_students_t_for_few_seeds():
    estimate = mean_ci([0.70, 0.72, 0.74])
    assert estimate.mean == pytest.approx(0.72)
    # sd 0.02, n 3: 4.303 * 0.02 / sqrt(3)
    assert estimate.half_width == pytest.approx(4.303 * 0.02 / math.sqrt(3), rel=1e-4)
    assert str(estimate) == "0.720 ± 0.050"
    # Student's t quantiles (scipy.stats): 12.706 at 1 degree of freedom, towards the normal's 1.960 with many
    assert t95(1) == pytest.approx(12.706, abs=1e-3) and t95(100) == pytest.approx(1.984, abs=1e-3)


def test_one_value_has_no_interval_and_none_is_an_error():
    assert str(mean_ci([0.5])) == "0.500 (n=1)" and not mean_ci([0.5]).excludes_zero
    with pytest.raises(ValueError, match="no values"):
        mean_ci([])


def test_paired_difference_uses_the_seeds_both_have():
    a = {0: 0.80, 1: 0.82, 2: 0.84, 3: 0.99}
    b = {0: 0.70, 1: 0.71, 2: 0.72}
    diff = paired_difference(a, b)
    assert diff.n == 3 and diff.mean == pytest.approx(0.11)
    assert diff.excludes_zero
    with pytest.raises(ValueError, match="no seed in common"):
        paired_difference({0: 1.0}, {1: 1.0})
