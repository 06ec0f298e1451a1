"""Per-token KL(policy || reference) estimated at the tokens the policy sampled (Schulman, "Approximating KL
divergence"): with log r = log reference - log policy, k1 = -log r (unbiased, high variance, can be negative) and
k3 = r - 1 - log r (unbiased, never negative, lower variance).

As a penalty the two enter differently: k1's gradient has expectation zero under the policy's own samples, so k1
is subtracted from the sequence's reward (as PPO and RLOO do); k3's gradient, (1 - r) grad log policy, pulls toward the
reference, so k3 is a per-token loss term (as GRPO does)."""

from __future__ import annotations

import torch

ESTIMATORS = ("k1", "k3")


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    log_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_ratio
    return torch.exp(log_ratio) - 1 - log_ratio


def adapted_kl_coef(coef: float, kl: float, target: float, completions: int, horizon: int) -> float:
    """The adaptive KL coefficient of Ziegler et al. (2019), as TRL's AdaptiveKLController: after a batch of
    `completions` with per-token KL `kl`, the coefficient moves by the proportional error to `target`, clipped to
    +-20%, scaled by `completions / horizon`: above the target the penalty grows, below it shrinks."""
    error = min(max(kl / target - 1, -0.2), 0.2)
    return coef * (1 + error * completions / horizon)
