"""The task or LM head an export carries: which transformers auto class loads it and where its tensors go.

Rules read lmlab's export names (`head.*`, and `backbone.lm_out.weight` for an untied output projection) and write
the HF model's own names (outside its base model).
"""

from __future__ import annotations

from dataclasses import dataclass

from lmlab.hf.mapping import Rule, linear
from lmlab.models import ModelConfig


@dataclass(frozen=True)
class Head:
    kind: str
    auto_class: str  # the transformers auto class that loads it


HEADS = {
    h.kind: h
    for h in (
        Head("masked_lm", "AutoModelForMaskedLM"),
        Head("causal_lm", "AutoModelForCausalLM"),
        Head("seq2seq_lm", "AutoModelForSeq2SeqLM"),
        Head("sequence_classification", "AutoModelForSequenceClassification"),
        Head("token_classification", "AutoModelForTokenClassification"),
        Head("question_answering", "AutoModelForQuestionAnswering"),
        Head("base", "AutoModel"),
    )
}

# The fine-tuning task families and the head each exports as.
TASK_HEADS = {
    "classification": "sequence_classification",
    "token_classification": "token_classification",
    "extractive_qa": "question_answering",
}


def head_kind(layout: str, objective: str, task_family: str | None) -> str:
    """A fine-tune exports its task's head; a pretraining run its LM head when HF has one for it: a decoder's and an
    encoder-decoder's output projection, BERT's MLM head. Other encoder objectives (ELECTRA, NSP, SOP) export
    the encoder alone."""
    if task_family in TASK_HEADS:
        return TASK_HEADS[task_family]
    if layout == "decoder":
        return "causal_lm"
    if layout == "encoder_decoder":
        return "seq2seq_lm"
    return "masked_lm" if objective == "mlm" else "base"


def head_rules(kind: str, cfg: ModelConfig, hf_names: set[str]) -> list[Rule]:
    """The head's tensors; `hf_names` are the HF model's, which decide between same-purpose names (GPT-2's and
    BERT's token classifier is `classifier`, Llama's `score`)."""
    untied = not cfg.tie_embeddings
    if kind == "masked_lm":
        return [
            *linear("head.dense", "cls.predictions.transform.dense"),
            *linear("head.norm", "cls.predictions.transform.LayerNorm"),
            Rule("head.bias", ("cls.predictions.bias",)),
            *([Rule("backbone.lm_out.weight", ("cls.predictions.decoder.weight",))] if untied else []),
        ]
    if kind in ("causal_lm", "seq2seq_lm"):
        return [Rule("backbone.lm_out.weight", ("lm_head.weight",))] if untied else []
    if kind == "sequence_classification":
        return [*linear("head.pool", "pool"), *linear("head.out", "out")]
    if kind == "token_classification":
        return linear("head.1", "classifier" if "classifier.weight" in hf_names else "score")
    if kind == "question_answering":
        return linear("head", "qa_outputs")
    return []
