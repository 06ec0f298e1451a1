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


def head_kind(layout: str, *, encoder_head: str, task_head: str | None) -> str:
    """A fine-tune exports its task family's head (`task_head`); otherwise a run exports its LM head when HF has one
    for it: a decoder's and an encoder-decoder's output projection, or for an encoder its objective's `hf_head`
    (BERT's MLM head; ELECTRA, NSP and SOP export the encoder alone: "base")."""
    if task_head is not None:
        return task_head
    if layout == "decoder":
        return "causal_lm"
    if layout == "encoder_decoder":
        return "seq2seq_lm"
    return encoder_head


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
