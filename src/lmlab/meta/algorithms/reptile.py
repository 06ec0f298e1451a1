"""Reptile (Nichol et al., 2018): SGD on the whole episode (support and query) for `inner_steps` steps, then move
the starting weights towards the adapted ones: the meta-gradient is (start - adapted), which the outer optimiser
applies (plain SGD at lr 1 would jump to the adapted weights)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmlab.errors import InputError
from lmlab.meta.algorithms.base import AlgorithmConfig, MetaAlgorithm
from lmlab.meta.episodes import Episode
from lmlab.meta.inner import inner_loop


@dataclass
class ReptileConfig(AlgorithmConfig):
    name: str = "reptile"
    adapt: str = "top_k_blocks"

    def validate(self) -> None:
        super().validate()
        if self.adapt == "head":
            raise InputError(
                "meta=reptile moves the starting weights toward the adapted ones, and the fresh head is not one of "
                "them: meta.adapt=head would train nothing. Use meta.adapt=all or top_k_blocks"
            )


class Reptile(MetaAlgorithm):
    Config = ReptileConfig
    trains_with_inner_loop = True

    def episode_loss(self, episode: Episode) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError("Reptile's meta-gradient is not the gradient of a loss; see meta_gradients")

    def meta_gradients(self, episodes: list[Episode]) -> dict[str, torch.Tensor]:
        params = dict(self.learner.named_parameters())
        losses = []
        for episode in episodes:
            start = self.learner.start(episode, detach=True)
            whole = self.learner.bind(episode.whole(), start)
            fast, episode_losses = inner_loop(whole, start, self.cfg.inner_steps, self.inner_lrs(), False)
            losses.append(torch.stack(episode_losses))
            for name in self.names:
                step = (params[name].detach() - fast[name].detach()) / len(episodes)
                grad = params[name].grad
                params[name].grad = step if grad is None else grad + step
        per_step = torch.stack(losses).mean(0)
        return {"episode_loss_before": per_step[0], "episode_loss_last_step": per_step[-1]}


ALGORITHM = Reptile
