"""A Hugging Face model (a local `save_pretrained` directory, or a hub name when online) as an lmlab starting point:
its config mapped to `ModelConfig`, its weights to the shared backbone (the mapping tables read backwards), its
tokenizer given lmlab's special tokens, and its source recorded as lineage.

Reading needs only safetensors (or torch for a pytorch_model.bin): `transformers` is not imported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file

from lmlab.data.cache import atomic_directory, fingerprint
from lmlab.data.tokenizer import TrainedTokenizer
from lmlab.errors import InputError, MissingInputFile
from lmlab.hf.architectures import mapping_named
from lmlab.hf.head_mapping import head_rules
from lmlab.hf.tokenizer import hf_tokenizer_file, with_lmlab_specials
from lmlab.models import ModelConfig

PREFIX = "hf:"
# Where a task model keeps its base model, per architecture (a base model's own checkpoint has none).
BASE_PREFIXES = {"bert": ("bert.", ""), "gpt2": ("transformer.", ""), "llama": ("model.", ""), "t5": ("",)}


def is_hf(source: str) -> bool:
    return source.startswith(PREFIX)


def locate(source: str, cache_dir: Path) -> tuple[Path, str]:
    """The local directory of `hf:<path or hub name>` and its revision ("local" for a directory)."""
    name = source.removeprefix(PREFIX)
    path = Path(name).expanduser()
    if path.is_dir():
        return path, "local"
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise MissingInputFile(f"{source}: {path} is not a directory holding a Hugging Face model")
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(
            name,
            cache_dir=str(cache_dir / "hf-hub"),
            allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "pytorch_model.bin"],
        )
    except Exception as err:
        raise MissingInputFile(
            f"{source}: no local directory {path}, and the hub could not provide {name!r}: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}"
        ) from err
    return Path(local), Path(local).name


def _shard_files(index: Path) -> list[Path]:
    """The shard files an index names: plain file names inside the index's own directory, nothing else (a name
    such as `../x` or `/etc/x` would read a file outside the model)."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        names = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise InputError(f"{index} is not a safetensors index (a JSON object with a weight_map): {err}") from None
    outside = [n for n in names if not isinstance(n, str) or Path(n).name != n or n in (".", "..")]
    if outside:
        raise InputError(
            f"{index} names shard files outside its directory {outside[:3]}; an index may name only files beside it"
        )
    missing = [n for n in names if not (index.parent / n).is_file()]
    if missing:
        raise MissingInputFile(f"{index} names shards that are not in {index.parent}: {missing[:3]}")
    return [index.parent / n for n in names]


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint: model.safetensors, its shards (model.safetensors.index.json) or a
    pytorch_model.bin (read with weights_only, so nothing in it is executed)."""
    single, index, legacy = (
        directory / n for n in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    )
    if single.is_file():
        return load_file(str(single))
    if index.is_file():
        state: dict[str, torch.Tensor] = {}
        for shard in _shard_files(index):
            state.update(load_file(str(shard)))
        return state
    if legacy.is_file():
        return torch.load(legacy, map_location="cpu", weights_only=True)
    raise MissingInputFile(f"{directory} holds no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def _base(
    state: dict[str, torch.Tensor], model_type: str, cfg: ModelConfig, directory: Path
) -> dict[str, torch.Tensor]:
    """The base model's tensors, their task-model prefix removed."""
    mapping = mapping_named(model_type)
    first = mapping.rules(cfg)[0].theirs[0]
    for prefix in BASE_PREFIXES[model_type]:
        if prefix + first in state:
            return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    raise InputError(f"{directory}: the weights have no {first!r} under any of {BASE_PREFIXES[model_type]}")


def _grow(t: torch.Tensor, rows: int) -> torch.Tensor:
    """`t` with `rows` more rows, each the mean of the existing ones (new tokens start as an average token)."""
    return torch.cat([t, t.mean(0, keepdim=True).expand(rows, *t.shape[1:])]) if rows else t


@dataclass
class Checkpoint:
    """An HF checkpoint in lmlab's terms: weights named as an lmlab export names them (backbone.*, and BERT's MLM
    head as head.* when the checkpoint has one), the objective whose head that is, and lineage tags."""

    path: Path
    model_cfg: ModelConfig
    weights: dict[str, torch.Tensor]
    tokenizer: TrainedTokenizer
    objective: str
    lineage: dict[str, str]


def load_hf(source: str, cache_dir: Path) -> Checkpoint:
    """`hf:<path or hub name>` mapped into lmlab's backbone, with lmlab's special tokens in its tokenizer."""
    directory, revision = locate(source, cache_dir)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise MissingInputFile(f"{source}: {directory} has no config.json")
    hf = json.loads(config_file.read_text())
    model_type = hf.get("model_type", "")
    mapping = mapping_named(model_type)
    cfg = mapping.model_config(hf)
    state = read_weights(directory)
    weights = {f"backbone.{k}": v for k, v in mapping.from_hf(cfg, _base(state, model_type, cfg, directory)).items()}
    objective = {"bert": "mlm", "gpt2": "clm", "llama": "clm", "t5": "span"}[model_type]
    head = "masked_lm" if model_type == "bert" else "causal_lm"
    if model_type == "bert" and "cls.predictions.transform.dense.weight" not in state:
        head, objective = "base", "none"
    if model_type == "t5":
        # transformers ties T5's output projection to the embeddings and scales the decoder output by d_model^-0.5
        # unless config.json says tie_word_embeddings: false; a scaled one becomes an untied projection with the factor.
        if hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True) is not False):
            cfg = replace(cfg, tie_embeddings=False)
            weights["backbone.lm_out.weight"] = weights["backbone.token_embedding.weight"] * cfg.d_model**-0.5
    else:
        for rule in head_rules(head, cfg, set(state)):
            if all(name in state for name in rule.theirs):
                weights[rule.ours] = rule.from_hf(state, cfg)
            elif rule.ours.startswith("backbone."):
                raise InputError(f"{source}: the untied output projection {rule.theirs[0]} is missing")

    tokenizer, added = _tokenizer(directory, cfg.vocab_size, cache_dir)
    extra = tokenizer.vocab_size - cfg.vocab_size
    if extra > 0:
        for name in ("backbone.token_embedding.weight", "backbone.lm_out.weight"):
            if name in weights:
                weights[name] = _grow(weights[name], extra)
        if "head.bias" in weights:
            weights["head.bias"] = torch.cat([weights["head.bias"], weights["head.bias"].new_zeros(extra)])
        cfg = replace(cfg, vocab_size=tokenizer.vocab_size)
    lineage = {
        "lmlab.pretrained": source,
        "lmlab.pretrained_run_id": "",
        "lmlab.pretrained_objective": objective,
        "lmlab.pretrained_step": "0",
        "lmlab.pretrained_path": str(directory),
        "lmlab.hf_model_type": model_type,
        "lmlab.hf_architectures": ",".join(hf.get("architectures") or []),
        "lmlab.hf_revision": revision,
        "lmlab.hf_added_tokens": ",".join(added) if len(added) <= 8 else f"{','.join(added[:8])},... ({len(added)})",
    }
    return Checkpoint(directory, cfg, weights, tokenizer, objective, lineage)


def _tokenizer(directory: Path, model_vocab: int, cache_dir: Path) -> tuple[TrainedTokenizer, list[str]]:
    """The checkpoint's tokenizer with lmlab's special tokens, saved once under the cache (its own fingerprint)."""
    source = hf_tokenizer_file(directory)
    if source.get_vocab_size() > model_vocab:
        raise InputError(
            f"{directory}: the tokenizer has {source.get_vocab_size()} tokens but the model's embeddings only "
            f"{model_vocab} (config.json vocab_size)"
        )
    tok, added = with_lmlab_specials(source, model_vocab)
    fp = fingerprint("hf-tokenizer", tok.to_str())
    final = cache_dir / "tokenizers" / fp
    if not (final / "tokenizer.json").is_file():
        with atomic_directory(final) as tmp:
            tok.save(str(tmp / "tokenizer.json"))
    path = final / "tokenizer.json"
    return TrainedTokenizer(tok, fp, path), added
