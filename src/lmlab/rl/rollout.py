"""Rollouts: `group` sampled completions of each prompt from a decoder, with a KV cache, as one right-padded batch
of prompt + completion rows, and the per-token log-probabilities of those completions in one padded forward.

Sampling is plain temperature sampling: truncating the distribution (top-k, top-p) would make the sampled tokens'
log-probabilities, and so the KL estimate to the reference, those of a different policy. Rows that reached the end
token are padded after it; the end token itself is part of the completion (the policy chose to stop).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmlab.models import Backbone


@dataclass
class Rollouts:
    ids: torch.Tensor  # (N, L) prompt + completion tokens, right-padded; N = prompts x group
    padding_mask: torch.Tensor  # (N, L) real tokens
    completion_mask: torch.Tensor  # (N, L) the completion's tokens
    ended: torch.Tensor  # (N,) the completion ends with the end token
    group: int

    @property
    def targets(self) -> torch.Tensor:
        """(N, L - 1): which next-token predictions are completion tokens (the ones a policy is scored on)."""
        return self.completion_mask[:, 1:]

    def completions(self, drop_end: bool = True) -> list[list[int]]:
        """Each row's completion token ids (without the end token unless asked)."""
        out = []
        for ids, mask, ended in zip(self.ids, self.completion_mask, self.ended, strict=True):
            tokens = ids[mask].tolist()
            out.append(tokens[:-1] if drop_end and bool(ended) else tokens)
        return out

    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(1)


@torch.no_grad()
def sample(
    backbone: Backbone,
    prompts: list[list[int]],
    group: int,
    max_new_tokens: int,
    temperature: float,
    end_id: int,
    pad_id: int,
    generator: torch.Generator,
) -> Rollouts:
    """`group` completions of at most `max_new_tokens` tokens for each prompt (prompt-major rows)."""
    device = backbone.token_embedding.weight.device
    rows: list[tuple[list[int], list[int], bool]] = []
    for prompt in prompts:
        cache = backbone.new_cache()
        x = torch.tensor([prompt] * group, device=device)
        logits = backbone.output_projection(backbone(x, cache=cache)[:, -1]).float()
        alive = torch.ones(group, dtype=torch.bool, device=device)
        new: list[torch.Tensor] = []
        for _ in range(max_new_tokens):
            probs = F.softmax(logits / temperature, dim=-1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            token = torch.where(alive, token, torch.full_like(token, pad_id))
            new.append(token)
            alive = alive & (token != end_id)
            if not alive.any():
                break
            logits = backbone.output_projection(backbone(token[:, None], cache=cache)[:, -1]).float()
        tokens = torch.stack(new, 1).tolist()
        for row in tokens:
            stopped = end_id in row
            rows.append((prompt, row[: row.index(end_id) + 1] if stopped else row, stopped))
    return pack(rows, group, pad_id, device)


def pack(rows: list[tuple[list[int], list[int], bool]], group: int, pad_id: int, device: torch.device) -> Rollouts:
    """(prompt, completion, ended) token rows as one right-padded batch."""
    width = max(len(p) + len(c) for p, c, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    completion_mask = torch.zeros(len(rows), width, dtype=torch.bool)
    lengths = torch.empty(len(rows), dtype=torch.long)
    for i, (prompt, completion, _) in enumerate(rows):
        ids[i, : len(prompt) + len(completion)] = torch.tensor(prompt + completion)
        completion_mask[i, len(prompt) : len(prompt) + len(completion)] = True
        lengths[i] = len(prompt) + len(completion)
    padding_mask = torch.arange(width)[None, :] < lengths[:, None]
    ended = torch.tensor([e for _, _, e in rows])
    return Rollouts(ids.to(device), padding_mask.to(device), completion_mask.to(device), ended.to(device), group)


@dataclass
class TokenScores:
    logprobs: torch.Tensor  # (N, L - 1) log p(token t+1 | tokens <= t), 0 where not a completion token
    entropy: torch.Tensor  # (N, L - 1) the predictive distribution's entropy there


def token_scores(backbone: Backbone, rollouts: Rollouts) -> TokenScores:
    """Log-probabilities of every completion token under `backbone`, in one padded forward (padding is never
    attended to and never scored)."""
    hidden = backbone(rollouts.ids, rollouts.padding_mask)
    logits = backbone.output_projection(hidden[:, :-1]).float()
    logp_all = F.log_softmax(logits, dim=-1)
    logprobs = logp_all.gather(-1, rollouts.ids[:, 1:, None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    mask = rollouts.targets
    return TokenScores(logprobs * mask, entropy * mask)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of `values` over the positions `mask` marks (per token, over the whole batch)."""
    return (values * mask).sum() / mask.sum().clamp(min=1)
