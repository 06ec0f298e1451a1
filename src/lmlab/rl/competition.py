"""Comparing policies under a judge. The judge is built from the run's reward: of two completions of the same
prompt, the one with the higher reward wins, equal rewards tie. Every evaluation samples the held-out prompts with
the same seed, so checkpoint A's i-th held-out completion and checkpoint B's i-th form a match; a checkpoint's win
rate against the reference and the Elo ratings of all evaluated checkpoints (Bradley-Terry, as Chatbot Arena
computes them) follow from those matches alone, without keeping any checkpoint's weights."""

from __future__ import annotations

import math

import torch

ELO_ANCHOR = 1000.0  # the reference's (the first evaluated checkpoint's) rating
_PRIOR_GAMES = 1.0  # a virtual tie between every two checkpoints, so a clean sweep gives a finite rating


def judge(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per match: 1 where `a`'s completion scored higher than `b`'s, 0.5 on a tie, 0 where it scored lower."""
    return (a > b).float() + 0.5 * (a == b).float()


def win_rate(scores: torch.Tensor, reference: torch.Tensor) -> float:
    """The share of matches the policy's completions win against the reference's (ties count half)."""
    return float(judge(scores, reference).mean())


def elo_ratings(scores: list[torch.Tensor], iterations: int = 500) -> list[float]:
    """Elo ratings of checkpoints from their held-out rewards (`scores[i]`: checkpoint i's, in the same match order
    for all), the first anchored at ELO_ANCHOR: the Bradley-Terry maximum-likelihood strengths (Hunter's MM
    iterations), each pair's record including `_PRIOR_GAMES` virtual tie, on Elo's scale (400 log10)."""
    n = len(scores)
    if n == 1:
        return [ELO_ANCHOR]
    wins = torch.zeros(n, n, dtype=torch.float64)
    games = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            if i != j:
                wins[i, j] = judge(scores[i], scores[j]).double().sum() + _PRIOR_GAMES / 2
                games[i, j] = scores[i].numel() + _PRIOR_GAMES
    strength = torch.ones(n, dtype=torch.float64)
    total_wins = wins.sum(1)
    for _ in range(iterations):
        pair_sums = strength[:, None] + strength[None, :]
        strength = total_wins / (games / pair_sums).sum(1).clamp(min=1e-300)
        strength = strength / strength[0]
    return [ELO_ANCHOR + 400 * math.log10(float(s)) for s in strength]
