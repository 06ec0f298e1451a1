"""What the class-episode and text-domain meta-learning tests share: a tiny backbone, the finite-difference check
of a meta-gradient."""

from __future__ import annotations

import pytest
import torch

from lmlab.meta.algorithms import MetaAlgorithm
from lmlab.meta.episodes import Episode
from lmlab.models import Backbone, ModelConfig

VOCAB = 50


def tiny_backbone(dtype: torch.dtype = torch.float32, seed: int = 0, layout: str = "encoder") -> Backbone:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        vocab_size=VOCAB,
        layout=layout,
        n_layers=2,
        d_model=8,
        n_heads=2,
        d_ff=16,
        max_positions=32,
        init_std=0.3,
        dropout=0.0,
        attention_dropout=0.0,
    )
    return Backbone(cfg).to(dtype)


def flat_grad(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in module.parameters()])


def assert_meta_gradient_matches_finite_differences(algorithm: MetaAlgorithm, episode: Episode) -> torch.Tensor:
    """The outer loss's gradient (backpropagated through the inner loop) along a random direction equals central
    differences of the same function (float64 parameters); returns the gradient."""
    algorithm.episode_loss(episode)[0].backward()
    analytic = flat_grad(algorithm)
    params = list(algorithm.parameters())
    direction = [torch.randn_like(p) for p in params]
    eps = 1e-6

    def shifted(sign: float) -> float:
        with torch.no_grad():
            for p, d in zip(params, direction, strict=True):
                p.add_(sign * eps * d)
        value = float(algorithm.episode_loss(episode)[0].detach())
        with torch.no_grad():
            for p, d in zip(params, direction, strict=True):
                p.sub_(sign * eps * d)
        return value

    numeric = (shifted(1.0) - shifted(-1.0)) / (2 * eps)
    along = float(analytic @ torch.cat([d.flatten() for d in direction]))
    assert abs(along) > 1e-4  # the check means something
    assert along == pytest.approx(numeric, rel=1e-5, abs=1e-9)
    return analytic
