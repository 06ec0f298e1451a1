"""The HF architectures lmlab maps, and which one a backbone config is."""

from __future__ import annotations

from lmlab.errors import InputError
from lmlab.hf.bert import Bert
from lmlab.hf.gpt2 import GPT2
from lmlab.hf.llama import Llama
from lmlab.hf.mapping import Mapping
from lmlab.hf.t5 import T5
from lmlab.models import ModelConfig

MAPPINGS: dict[str, Mapping] = {m.model_type: m for m in (Bert(), GPT2(), Llama(), T5())}


def mapping_for(cfg: ModelConfig) -> Mapping:
    """The architecture whose layout is `cfg`'s exactly; otherwise refuse, naming for each architecture the options
    that differ from it (the closest first)."""
    reasons = {name: m.refusals(cfg) for name, m in MAPPINGS.items()}
    for name, problems in reasons.items():
        if not problems:
            return MAPPINGS[name]
    closest = sorted(reasons.items(), key=lambda item: len(item[1]))
    detail = "; ".join(f"{name}: {', '.join(problems)}" for name, problems in closest)
    raise InputError(
        f"this model has no exact Hugging Face counterpart. Options that differ, per architecture: {detail}. "
        "Train with a preset that maps (model=bert_style, gpt2_style, llama_style or t5_style)"
    )


def mapping_named(model_type: str) -> Mapping:
    if model_type not in MAPPINGS:
        raise InputError(f"config.json model_type={model_type!r} has no lmlab mapping; lmlab maps {sorted(MAPPINGS)}")
    return MAPPINGS[model_type]
