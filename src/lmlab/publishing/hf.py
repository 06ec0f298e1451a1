"""An lmlab export as a Hugging Face model directory: config.json, weights, tokenizer and a model card, loadable by
the matching `transformers` auto class (sequence classifiers with `trust_remote_code=True`, see modeling_lmlab)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lmlab.data.cache import PublishedMeanwhile, atomic_directory
from lmlab.data.tokenizer import CLS, PAD, SEP
from lmlab.errors import InputError
from lmlab.generation import GENERATIVE_LAYOUTS
from lmlab.hf.architectures import mapping_for
from lmlab.hf.head_mapping import HEADS, head_kind, head_rules
from lmlab.hf.mapping import Mapping
from lmlab.hf.tokenizer import hf_tokenizer
from lmlab.publishing.card import model_card
from lmlab.runs.export_dir import ExportedRun, strip_prefix

# transformers' pipeline task of each head (what the model card and the MLflow registry declare).
PIPELINE_TASKS = {
    "masked_lm": "fill-mask",
    "causal_lm": "text-generation",
    "seq2seq_lm": "text2text-generation",
    "sequence_classification": "text-classification",
    "token_classification": "token-classification",
    "question_answering": "question-answering",
    "base": "feature-extraction",
}


@dataclass
class HFExport:
    path: Path
    model_type: str
    head: str  # a key of heads.HEADS
    auto_class: str
    model_class: str
    trust_remote_code: bool


def task_family(run: ExportedRun) -> str | None:
    """The fine-tuning task family recorded in the export's config.yaml (None for other stages)."""
    config = run.path / "config.yaml"
    if not config.is_file():
        return None
    loaded = OmegaConf.load(config)
    task = loaded.get("task") if isinstance(loaded, DictConfig) else None
    return None if task is None else task.get("family")


def _labels(run: ExportedRun) -> list[str]:
    path = run.path / "labels.json"
    if not path.is_file():
        raise InputError(f"{run.path} is a fine-tune export without labels.json; it cannot name its classes")
    return json.loads(path.read_text())


def _template(kind: str, layout: str, mode_token: str | None) -> str | None:
    if layout == "encoder_decoder":
        return "source_ul2" if mode_token is not None else "source"
    if layout == "decoder" and kind == "causal_lm":
        return None
    return "pair"


def _build(mapping: Mapping, kind: str, config: Any) -> Any:
    import transformers

    if kind == "sequence_classification":
        from lmlab.hf import modeling_lmlab

        name = {"bert": "Bert", "gpt2": "GPT2", "llama": "Llama"}[mapping.model_type]
        model = getattr(modeling_lmlab, f"Lmlab{name}ForSequenceClassification")(config)
        model.register_for_auto_class("AutoModelForSequenceClassification")
        return model
    return getattr(transformers, HEADS[kind].auto_class).from_config(config)


def _base_prefix(model: torch.nn.Module, first: str) -> str:
    """Where the base model sits inside a task model ("bert.", "transformer.", "model.", or "" for T5): the child
    holding the base model's tensor `first`."""
    names = model.state_dict()
    for prefix in ["", *(name + "." for name, _ in model.named_children())]:
        if prefix + first in names:
            return prefix
    raise RuntimeError(f"{type(model).__name__} has no {first}")


def _load(model: torch.nn.Module, state: dict[str, torch.Tensor], kind: str) -> None:
    """Load every mapped tensor; the model's tensors left out must be tied to one loaded (an output projection tied
    to the embeddings), except BERT's pooler in an encoder-only export, which lmlab never trains."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise RuntimeError(f"mapped tensors the HF model does not have: {unexpected[:6]}")
    own = model.state_dict()
    loaded = {own[name].data_ptr() for name in state}
    untied = [
        name
        for name in missing
        if own[name].data_ptr() not in loaded and not (kind == "base" and name.startswith("pooler."))
    ]
    if untied:
        raise RuntimeError(f"HF tensors no lmlab tensor maps to: {untied[:6]}")


def export_hf(run: ExportedRun, out: Path, card_facts: dict[str, Any]) -> HFExport:
    """Write `run` as a Hugging Face model into `out` (which must not exist or be empty)."""
    cfg = run.model_cfg
    mapping = mapping_for(cfg)
    # Imported here: the objectives and task families pull in torchmetrics, which `export.py --help` never needs.
    from lmlab.objectives import objective_traits
    from lmlab.tasks import family_class

    family = task_family(run)
    task_head = None if family is None else family_class(family).hf_head
    traits = objective_traits(run.objective_name)
    kind = head_kind(cfg.layout, encoder_head=traits.hf_head, task_head=task_head)
    if mapping.model_type == "t5" and kind not in ("seq2seq_lm", "base"):
        raise InputError(
            f"a {family} fine-tune of an encoder-decoder has no Hugging Face T5 class; export its pretraining run"
        )
    if family is not None and task_head is None and cfg.layout not in GENERATIVE_LAYOUTS:
        raise InputError(f"a {family} fine-tune with model.layout={cfg.layout} has no Hugging Face class")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"out={out} exists and is not empty; choose a new directory (nothing was written)")

    from transformers import AutoConfig

    tok = run.tokenizer
    fields: dict[str, Any] = {
        **mapping.hf_config(cfg),
        "pad_token_id": tok.token_id(PAD),
        "eos_token_id": tok.token_id(SEP),
        # lmlab reads no beginning-of-text token; its start token is [CLS].
        "bos_token_id": tok.token_id(CLS),
    }
    if mapping.model_type == "t5":
        fields["decoder_start_token_id"] = tok.token_id(CLS)
    if kind in ("sequence_classification", "token_classification"):
        labels = _labels(run)
        fields["id2label"] = dict(enumerate(labels))
        fields["label2id"] = {label: i for i, label in enumerate(labels)}
    if kind == "sequence_classification":
        fields["lmlab_pooling"] = "last" if cfg.layout == "decoder" else "mean"
    config = AutoConfig.for_model(mapping.model_type, **fields)
    model = _build(mapping, kind, config).eval()

    prefix = _base_prefix(model, mapping.rules(cfg)[0].theirs[0])
    state = {prefix + k: v for k, v in mapping.to_hf(cfg, strip_prefix(run.weights, "backbone.")).items()}
    for rule in head_rules(kind, cfg, set(model.state_dict())):
        state.update(rule.to_hf(run.weights[rule.ours], cfg))
    _load(model, state, kind)
    for key, value in (("pad_token_id", fields["pad_token_id"]), ("eos_token_id", fields["eos_token_id"])):
        if getattr(model, "generation_config", None) is not None:
            setattr(model.generation_config, key, value)
    if mapping.model_type == "t5":
        model.generation_config.decoder_start_token_id = fields["decoder_start_token_id"]

    template = _template(kind, cfg.layout, traits.mode_token)
    # Token type ids only where lmlab's model reads segments (a BERT export without them has one type).
    tokenizer = hf_tokenizer(tok, template, cfg.max_positions, segments=cfg.segments > 0)
    remote = kind == "sequence_classification"
    result = HFExport(
        out, mapping.model_type, kind, HEADS[kind].auto_class, type(model).__name__, trust_remote_code=remote
    )
    try:
        with atomic_directory(out, exclusive=True) as tmp:
            model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            (tmp / "README.md").write_text(model_card(run, result, PIPELINE_TASKS[kind], card_facts))
    except PublishedMeanwhile as err:
        raise InputError(
            f"out={out}: another export wrote it while this one ran; nothing of this one was kept"
        ) from err
    return result
