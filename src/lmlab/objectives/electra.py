"""ELECTRA: a small generator fills masked positions by MLM sampling; the backbone (the discriminator, what
downstream tasks use) detects which tokens were replaced. Generator and discriminator share the token embedding."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lmlab.data.blocks import Block
from lmlab.data.tokenizer import TrainedTokenizer
from lmlab.errors import InputError
from lmlab.heads import IGNORE
from lmlab.models import Backbone, ModelConfig
from lmlab.models.blocks import make_activation
from lmlab.models.stack import Stack, flops_per_token
from lmlab.objectives.base import Objective, ObjectiveOutput
from lmlab.objectives.mlm import MaskedLM, MLMConfig


@dataclass
class ElectraConfig(MLMConfig):
    name: str = "electra"
    mask_token_frac: float = 1.0
    random_token_frac: float = 0.0
    # Generator width, heads and feed-forward size as a fraction of the discriminator's (the paper's 1/4 .. 1/2).
    generator_scale: float = 0.25
    discriminator_weight: float = 50.0

    def validate(self) -> None:
        super().validate()
        if not 0.0 < self.generator_scale <= 1.0:
            raise InputError(f"objective.generator_scale must be in (0, 1], got {self.generator_scale}")


def generator_config(cfg: ModelConfig, scale: float) -> ModelConfig:
    heads = max(1, round(cfg.n_heads * scale))
    width = max(heads, round(cfg.d_model * scale / heads) * heads)
    return replace(cfg, layout="encoder", d_model=width, n_heads=heads, d_ff=max(1, round(cfg.d_ff * scale)))


class ElectraHead(nn.Module):
    """The generator (its own narrow stack, reading and predicting through the shared embedding via projections)
    and the discriminator's per-token replaced/original classifier."""

    def __init__(self, cfg: ModelConfig, scale: float) -> None:
        super().__init__()
        gen = generator_config(cfg, scale)
        self.generator = Stack(gen, causal=False, bidirectional=True)
        self.proj_in = nn.Linear(cfg.d_model, gen.d_model)
        self.gen_dense = nn.Linear(gen.d_model, gen.d_model)
        self.gen_act = make_activation(cfg.activation)
        self.gen_norm = nn.LayerNorm(gen.d_model, eps=cfg.norm_eps)
        self.proj_out = nn.Linear(gen.d_model, cfg.d_model)
        self.gen_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.disc_dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.disc_act = make_activation(cfg.activation)
        self.disc_out = nn.Linear(cfg.d_model, 1)

    def generator_logits(self, backbone: Backbone, input_ids: torch.Tensor, padding_mask, selected) -> torch.Tensor:
        hidden = self.generator(self.proj_in(backbone.embed(input_ids)), padding_mask)[selected]
        hidden = self.proj_out(self.gen_norm(self.gen_act(self.gen_dense(hidden))))
        return backbone.output_projection(hidden) + self.gen_bias

    def discriminator_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.disc_out(self.disc_act(self.disc_dense(hidden))).squeeze(-1)


def sample_from_logits(logits: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """One token per row by inverting the softmax CDF at `uniform` (drawn in the transform, so reproducible)."""
    cdf = F.softmax(logits.float(), dim=-1).cumsum(-1)
    return torch.searchsorted(cdf, uniform[:, None].float()).squeeze(-1).clamp(max=logits.shape[-1] - 1)


def binary_auc(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Area under the ROC curve of `scores` for the 0/1 `target` (Mann-Whitney: the chance that a random positive
    outscores a random negative); 0.5 (chance) when one class is absent."""
    positives = target.bool()
    n_pos, n_neg = positives.sum(), (~positives).sum()
    if n_pos == 0 or n_neg == 0:
        return torch.tensor(0.5, device=scores.device)
    ranks = torch.empty_like(scores, dtype=torch.float64)
    ranks[scores.argsort()] = torch.arange(1, len(scores) + 1, device=scores.device, dtype=torch.float64)
    return ((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)).float()


def replaced_labels(corrupted: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """1 where the discriminator's input differs from the original token; 0 where the generator sampled the
    original back (ELECTRA counts those as original)."""
    return (corrupted != original).float()


class Electra(Objective):
    Config = ElectraConfig
    layout = "encoder"
    loss_is_nll = False

    def __init__(self, cfg: ElectraConfig, tokenizer: TrainedTokenizer) -> None:
        super().__init__(cfg, tokenizer)
        self.masker = MaskedLM(cfg, tokenizer)

    def transform(self, block: Block, rng: np.random.Generator) -> dict[str, np.ndarray]:
        inputs, labels = self.masker.mask(block.ids, rng)
        return {"input_ids": inputs, "labels": labels, "uniform": rng.random(len(inputs)).astype(np.float32)}

    def build_head(self, model_cfg: ModelConfig) -> nn.Module:
        return ElectraHead(model_cfg, self.cfg.generator_scale)

    def forward(self, backbone: Backbone, head: nn.Module, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        assert isinstance(head, ElectraHead), type(head)
        input_ids, labels, padding_mask = batch["input_ids"], batch["labels"], batch.get("padding_mask")
        selected = labels != IGNORE
        gen_logits = head.generator_logits(backbone, input_ids, padding_mask, selected).float()
        gen_loss = F.cross_entropy(gen_logits, labels[selected]) if selected.any() else gen_logits.sum() * 0.0
        original = torch.where(selected, labels, input_ids)
        corrupted = input_ids.clone()
        with torch.no_grad():
            corrupted[selected] = sample_from_logits(gen_logits, batch["uniform"][selected])
        target = replaced_labels(corrupted, original)
        disc_logits = head.discriminator_logits(backbone(corrupted, padding_mask)).float()
        real = torch.ones_like(target, dtype=torch.bool) if padding_mask is None else padding_mask
        disc_loss = F.binary_cross_entropy_with_logits(disc_logits[real], target[real])
        n_real = real.sum()
        n_correct = ((disc_logits[real] > 0).float() == target[real]).sum()
        loss = gen_loss + self.cfg.discriminator_weight * disc_loss
        judged, truth = disc_logits[real].detach(), target[real]
        replaced = truth.bool()
        parts = {
            "generator_loss": gen_loss.detach(),
            "discriminator_loss": disc_loss.detach(),
            "replaced_frac": truth.mean(),
            # What to read the discriminator against: `acc` vs always answering "original" (1 - replaced_frac),
            # its AUC (0.5 = chance) and its recall of replaced tokens; the generator's accuracy on masked tokens.
            "discriminator_auc": binary_auc(judged, truth),
            "replaced_recall": (judged[replaced] > 0).float().mean() if replaced.any() else judged.sum() * 0.0,
            "generator_acc": (gen_logits.detach().argmax(-1) == labels[selected]).float().mean()
            if selected.any()
            else gen_logits.sum() * 0.0,
        }
        return ObjectiveOutput(loss, n_real, n_correct, parts)

    def flops_per_batch(self, backbone: Backbone, batch: dict[str, torch.Tensor]) -> int:
        cfg = backbone.cfg
        batch_size, seq_len = batch["input_ids"].shape
        gen = generator_config(cfg, self.cfg.generator_scale)
        n_targets = int((batch["labels"] != IGNORE).sum())
        per_token = (
            backbone.flops_per_token(seq_len)
            + flops_per_token(gen, seq_len)
            + 2 * (cfg.d_model * gen.d_model * 2 + cfg.d_model**2)
        )
        return 3 * (batch_size * seq_len * per_token + n_targets * 2 * cfg.d_model * cfg.vocab_size)


OBJECTIVE = Electra
