"""Rollouts: `group` sampled completions of each prompt from a policy, as one right-padded batch of prompt +
completion rows, and the per-token log-probabilities of those completions in one padded forward.

Each layout samples as `lmlab.generation` decodes: a decoder with a KV cache, a prefix-LM reading the prompt as its
bidirectional prefix, an encoder-decoder encoding the prompt and writing the completion from its decoder's start
token (which its rows hold between prompt and completion). Scoring gives each layout the same view of a row.

Sampling is plain temperature sampling: truncating the distribution (top-k, top-p) would make the sampled tokens'
log-probabilities, and so the KL estimate to the reference, those of a different policy. Rows that reached the end
token are padded after it; the end token itself is part of the completion (the policy chose to stop).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmlab.generation import Stepper
from lmlab.models import Backbone


@dataclass
class Rollouts:
    ids: torch.Tensor  # (N, L) prompt (+ start token) + completion tokens, right-padded; N = prompts x group
    padding_mask: torch.Tensor  # (N, L) real tokens
    completion_mask: torch.Tensor  # (N, L) the completion's tokens
    ended: torch.Tensor  # (N,) the completion ends with the end token
    group: int
    prompt_lengths: torch.Tensor  # (N,) the prompt's tokens at the start of each row

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
    *,
    max_new_tokens: int,
    temperature: float,
    end_id: int,
    pad_id: int,
    generator: torch.Generator,
    start_id: int | None = None,
) -> Rollouts:
    """`group` completions of at most `max_new_tokens` tokens for each prompt (prompt-major rows); an
    encoder-decoder's decoder starts from `start_id`."""
    device = backbone.token_embedding.weight.device
    encoder_decoder = backbone.cfg.layout == "encoder_decoder"
    if encoder_decoder and start_id is None:
        raise ValueError("an encoder-decoder policy needs start_id, its decoder's first token")
    rows: list[tuple[list[int], list[int], bool]] = []
    for prompt in prompts:
        x = torch.tensor([prompt] * group, device=device)
        step = Stepper(backbone, x)
        ids = torch.full((group, 1), start_id, device=device) if encoder_decoder else x  # type: ignore[arg-type]
        logits = step(ids)
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
            ids = torch.cat([ids, token[:, None]], 1)
            logits = step(token[:, None], ids)
        tokens = torch.stack(new, 1).tolist()
        for row in tokens:
            stopped = end_id in row
            rows.append((prompt, row[: row.index(end_id) + 1] if stopped else row, stopped))
    return pack(rows, group, pad_id, device, start_id if encoder_decoder else None)


def pack(
    rows: list[tuple[list[int], list[int], bool]],
    group: int,
    pad_id: int,
    device: torch.device,
    start_id: int | None = None,
) -> Rollouts:
    """(prompt, completion, ended) token rows as one right-padded batch; with `start_id` (an encoder-decoder's
    decoder start token) between prompt and completion."""
    start = [] if start_id is None else [start_id]
    width = max(len(p) + len(start) + len(c) for p, c, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    completion_mask = torch.zeros(len(rows), width, dtype=torch.bool)
    lengths = torch.empty(len(rows), dtype=torch.long)
    for i, (prompt, completion, _) in enumerate(rows):
        row = prompt + start + completion
        ids[i, : len(row)] = torch.tensor(row)
        completion_mask[i, len(row) - len(completion) : len(row)] = True
        lengths[i] = len(row)
    padding_mask = torch.arange(width)[None, :] < lengths[:, None]
    ended = torch.tensor([e for _, _, e in rows])
    prompt_lengths = torch.tensor([len(p) for p, _, _ in rows])
    return Rollouts(
        ids.to(device),
        padding_mask.to(device),
        completion_mask.to(device),
        ended.to(device),
        group,
        prompt_lengths.to(device),
    )


def concat(a: Rollouts, b: Rollouts, pad_id: int) -> Rollouts:
    """The rows of `a` then those of `b`, right-padded to the wider of the two."""
    width = max(a.ids.shape[1], b.ids.shape[1])

    def widened(t: torch.Tensor, value: int | bool) -> torch.Tensor:
        return F.pad(t, (0, width - t.shape[1]), value=value)

    return Rollouts(
        torch.cat([widened(a.ids, pad_id), widened(b.ids, pad_id)]),
        torch.cat([widened(a.padding_mask, False), widened(b.padding_mask, False)]),
        torch.cat([widened(a.completion_mask, False), widened(b.completion_mask, False)]),
        torch.cat([a.ended, b.ended]),
        a.group,
        torch.cat([a.prompt_lengths, b.prompt_lengths]),
    )


@dataclass
class TokenScores:
    logprobs: torch.Tensor  # (N, L - 1) log p(token t+1 | tokens <= t), 0 where not a completion token
    entropy: torch.Tensor  # (N, L - 1) the predictive distribution's entropy there


def token_scores(backbone: Backbone, rollouts: Rollouts) -> TokenScores:
    """Log-probabilities of every completion token under `backbone`, in one padded forward (padding is never
    attended to and never scored); position t of a row scores its token t + 1."""
    if backbone.cfg.layout == "encoder_decoder":
        logprobs, entropy = _encoder_decoder_scores(backbone, rollouts)
    else:
        prefix = rollouts.prompt_lengths if backbone.cfg.layout == "prefix_lm" else None
        hidden = backbone(rollouts.ids, rollouts.padding_mask, prefix_lengths=prefix)
        logprobs, entropy = _scores(backbone.output_projection(hidden[:, :-1]), rollouts.ids[:, 1:])
    mask = rollouts.targets
    return TokenScores(logprobs * mask, entropy * mask)


def _scores(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The targets' log-probabilities and the predictive entropy at each position."""
    logp_all = F.log_softmax(logits.float(), dim=-1)
    return logp_all.gather(-1, targets[..., None]).squeeze(-1), -(logp_all.exp() * logp_all).sum(-1)


def _encoder_decoder_scores(backbone: Backbone, r: Rollouts) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder reads each row's prompt, the decoder its start token + completion; the decoder's scores are
    placed where a row's own positions would put them (decoder position k scores row token P + k + 1)."""
    width = r.ids.shape[1]
    pos = torch.arange(width, device=r.ids.device)
    prompts = r.prompt_lengths
    source_mask = pos[None, : int(prompts.max())] < prompts[:, None]
    memory = backbone(r.ids[:, : source_mask.shape[1]], source_mask)
    decoded = int((r.padding_mask.sum(1) - prompts).max())  # the start token and the longest completion
    index = prompts[:, None] + pos[None, :decoded]
    # Past a row's end the decoder reads padding (or a repeated last token): causal, so no real position sees it.
    decoder_ids = r.ids.gather(1, index.clamp(max=width - 1))
    hidden = backbone.decode(decoder_ids, memory, source_mask)
    logprobs, entropy = _scores(backbone.output_projection(hidden[:, :-1]), decoder_ids[:, 1:])
    inside, frame = index[:, :-1] <= width - 2, index[:, :-1].clamp(max=width - 2)

    def placed(values: torch.Tensor) -> torch.Tensor:
        return values.new_zeros(r.ids.shape[0], width - 1).scatter_add(1, frame, values * inside)

    return placed(logprobs), placed(entropy)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of `values` over the positions `mask` marks (per token, over the whole batch)."""
    return (values * mask).sum() / mask.sum().clamp(min=1)
