"""Text generation from a trained run: greedy, sampling (temperature, top-k, top-p) and beam search.

`generate.py` loads a run (`lmlab.runs.export_dir.load_export`: an export dir, a run dir or an MLflow run id) into a
`LoadedRun`; the decoding here needs only the backbone and the tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from lmlab.data.tokenizer import CLS, SEP, special_tokens_read
from lmlab.errors import InputError
from lmlab.models import Backbone

GENERATIVE_LAYOUTS = ("decoder", "prefix_lm", "encoder_decoder")


@dataclass
class GenerationConfig:
    strategy: str = "greedy"  # greedy | sample | beam
    max_new_tokens: int = 40
    temperature: float = 1.0
    top_k: int = 0  # 0 = no top-k filtering
    top_p: float = 1.0  # 1 = no nucleus filtering
    num_beams: int = 4
    stop_at_sep: bool = True

    def validate(self) -> None:
        if self.strategy not in ("greedy", "sample", "beam"):
            raise InputError(f"strategy={self.strategy!r} is not supported; expected greedy, sample or beam")
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.num_beams < 1:
            raise InputError(
                "generation needs temperature > 0, 0 < top_p <= 1, top_k >= 0 and num_beams >= 1; got "
                f"temperature={self.temperature}, top_p={self.top_p}, top_k={self.top_k}, num_beams={self.num_beams}"
            )
        if self.max_new_tokens < 1:
            raise InputError(f"generation.max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass
class GenerateConfig:
    """Schema of `generate.py` (conf/generate.yaml)."""

    run: str = "???"  # an export dir, a run output dir, an MLflow run id or hf:<dir or hub name>
    prompt: str = "???"
    seed: int = 0
    tracking_uri: str = ""
    cache_dir: str = ".cache"  # where an MLflow run's artifacts and an hf: model's tokenizer are kept
    generation: GenerationConfig = field(default_factory=GenerationConfig)


@dataclass
class LoadedRun:
    backbone: Backbone
    tokenizer: Tokenizer
    mode_token: str | None  # what an encoder-decoder reads before a prompt (its objective's `mode_token`)


@torch.no_grad()
def generate(
    backbone: Backbone,
    prompt: torch.Tensor,
    cfg: GenerationConfig,
    stop_id: int | None = None,
    generator: torch.Generator | None = None,
    start_id: int | None = None,
) -> torch.Tensor:
    """prompt: (1, P) ids. Decoder and prefix-LM layouts return (1, P + n): the prompt and its continuation; the
    decoder decodes incrementally with a KV cache, the prefix-LM reads the prompt as its bidirectional prefix and
    recomputes each step. The encoder_decoder layout encodes the prompt and returns the decoder's (1, 1 + n)
    output, which starts with `start_id`."""
    cfg.validate()
    if backbone.cfg.layout not in GENERATIVE_LAYOUTS:
        raise InputError(
            f"generation needs model.layout in {list(GENERATIVE_LAYOUTS)}; this run is "
            f"{backbone.cfg.layout} (an {backbone.cfg.layout} predicts masked tokens, not next tokens)"
        )
    _check_length(backbone.cfg.layout, prompt.shape[1], cfg.max_new_tokens, backbone.cfg.max_positions)
    step = Stepper(backbone, prompt)
    if step.memory is not None:
        if start_id is None:
            raise InputError("an encoder-decoder needs start_id, the decoder's first token")
        prompt = torch.tensor([[start_id]], device=prompt.device)
    if cfg.strategy == "beam":
        return _beam_search(step, prompt, cfg, stop_id)
    ids, logits = prompt, step(prompt)
    for _ in range(cfg.max_new_tokens):
        if cfg.strategy == "greedy":
            token = logits.argmax(-1, keepdim=True)
        else:
            probs = F.softmax(filter_logits(logits / cfg.temperature, cfg.top_k, cfg.top_p), dim=-1)
            token = torch.multinomial(probs, 1, generator=generator)
        ids = torch.cat([ids, token], dim=1)
        if stop_id is not None and int(token) == stop_id:
            break
        logits = step(token, ids)
    return ids


def _check_length(layout: str, prompt_len: int, max_new_tokens: int, max_positions: int) -> None:
    """Refuse before decoding a generation that would run past the model's positions halfway through."""
    if layout == "encoder_decoder":
        if prompt_len > max_positions:
            raise InputError(
                f"the prompt is {prompt_len} tokens, more than this run's model.max_positions={max_positions}; "
                "shorten the prompt"
            )
        needed, what = 1 + max_new_tokens, "the decoder's start token"
    else:
        if prompt_len >= max_positions:
            raise InputError(
                f"the prompt is {prompt_len} tokens, which leaves no room to generate within this run's "
                f"model.max_positions={max_positions}; shorten the prompt to fewer than {max_positions} tokens"
            )
        needed, what = prompt_len + max_new_tokens, f"the prompt's {prompt_len} tokens"
    if needed > max_positions:
        raise InputError(
            f"{what} + generation.max_new_tokens={max_new_tokens} = {needed} positions, more than this run's "
            f"model.max_positions={max_positions}; set generation.max_new_tokens <= "
            f"{max_positions - needed + max_new_tokens} or shorten the prompt"
        )


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set to -inf every logit outside the top-k, and outside the smallest set whose probability reaches top_p."""
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = F.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = cumulative - F.softmax(sorted_logits, dim=-1) >= top_p  # keep tokens until top_p is reached
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


class Stepper:
    """Next-token logits (B, V) after feeding new tokens. Owns the KV cache (decoder, encoder-decoder), the encoded
    prompt (encoder-decoder) or the prefix length (prefix-LM)."""

    def __init__(self, backbone: Backbone, prompt: torch.Tensor) -> None:
        layout = backbone.cfg.layout
        self.backbone = backbone
        self.prompt_len = prompt.shape[1]
        self.cache = backbone.new_cache() if layout in ("decoder", "encoder_decoder") else None
        self.memory = backbone(prompt) if layout == "encoder_decoder" else None

    def __call__(self, new: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        if self.memory is not None:
            hidden = self.backbone.decode(new, self.memory, cache=self.cache)
        elif self.cache is not None:
            hidden = self.backbone(new, cache=self.cache)
        else:
            full = new if ids is None else ids
            prefix = torch.full((full.shape[0],), self.prompt_len, device=full.device)
            hidden = self.backbone(full, prefix_lengths=prefix)
        return self.backbone.output_projection(hidden[:, -1]).float()

    def reorder(self, rows: torch.Tensor) -> None:
        """Follow the surviving beams."""
        if self.cache is not None:
            self.cache.reorder(rows)
        if self.memory is not None:
            self.memory = self.memory[rows]


def _beam_search(step: Stepper, prompt: torch.Tensor, cfg: GenerationConfig, stop_id: int | None) -> torch.Tensor:
    """Keep the `num_beams` highest log-probability continuations; finished ones compete by mean log-prob."""
    beams, scores = prompt, torch.zeros(1)
    logits = step(prompt)
    finished: list[tuple[float, torch.Tensor]] = []
    for n in range(1, cfg.max_new_tokens + 1):
        logprobs = scores[:, None] + F.log_softmax(logits, dim=-1)
        top = torch.topk(logprobs.flatten(), min(cfg.num_beams, logprobs.numel()))
        rows, tokens = top.indices // logprobs.shape[1], top.indices % logprobs.shape[1]
        beams = torch.cat([beams[rows], tokens[:, None]], dim=1)
        scores = top.values
        done = (tokens == stop_id) if stop_id is not None else torch.zeros_like(tokens, dtype=torch.bool)
        finished += [(float(scores[i]) / n, beams[i]) for i in torch.nonzero(done).flatten().tolist()]
        alive = ~done
        if not alive.any() or n == cfg.max_new_tokens:
            break
        beams, scores, rows = beams[alive], scores[alive], rows[alive]
        step.reorder(rows)
        logits = step(beams[:, -1:], beams)
    n_new = beams.shape[1] - prompt.shape[1]
    finished += [(float(s) / max(1, n_new), b) for s, b in zip(scores, beams, strict=True)]
    return max(finished, key=lambda item: item[0])[1][None]


def model_input(ids: list[int], tok: Tokenizer, layout: str, mode_token: str | None) -> list[int]:
    """What a model reads for a prompt's tokens: decoders and prefix-LMs continue them as they are; an
    encoder-decoder encodes them closed by [SEP] (after its objective's mode token, UL2's [S2S]) and writes its
    output from the decoder's start token, [CLS]."""
    if layout != "encoder_decoder":
        return ids
    mode = [tok.token_to_id(mode_token)] if mode_token is not None else []
    return cast(list[int], [*mode, *ids, tok.token_to_id(SEP)])


def complete(run: LoadedRun, prompt: str, cfg: GenerationConfig, seed: int = 0) -> str:
    """The prompt's continuation as text. An encoder-decoder reads the prompt (after UL2's [S2S] mode token for
    ul2 runs) and writes its output from scratch: a continuation (ul2), the reconstruction (denoise) or the spans
    behind sentinels such as [SPAN0] in the prompt (span)."""
    tok = run.tokenizer
    with special_tokens_read(tok):  # a prompt's sentinels and [SEP]s are meant as such
        ids = tok.encode(prompt, add_special_tokens=False).ids
    if not ids:
        raise InputError("the prompt is empty after tokenization")
    stop_id = tok.token_to_id(SEP) if cfg.stop_at_sep else None
    generator = torch.Generator().manual_seed(seed)
    if run.backbone.cfg.layout == "encoder_decoder":
        source = model_input(ids, tok, run.backbone.cfg.layout, run.mode_token)
        out = generate(run.backbone, torch.tensor([source]), cfg, stop_id, generator, start_id=tok.token_to_id(CLS))
        new = out[0, 1:].tolist()
        # Keep sentinels visible: they say which gap a span fills.
        return tok.decode(new[:-1] if new and new[-1] == stop_id else new, skip_special_tokens=False)
    out = generate(run.backbone, torch.tensor([ids]), cfg, stop_id, generator)
    return tok.decode(out[0, len(ids) :].tolist())
