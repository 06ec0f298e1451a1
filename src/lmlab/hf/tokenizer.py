"""Tokenizers across the door: lmlab's tokenizer.json as a `PreTrainedTokenizerFast` that gives the ids lmlab feeds
the model, and an HF tokenizer as one lmlab can train and fine-tune with (its special tokens added when missing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, processors

from lmlab.data.tokenizer import CLS, MASK, PAD, S2S, SEP, UNK, TrainedTokenizer
from lmlab.errors import InputError, MissingInputFile

# What lmlab puts around a text for each kind of export (the rest of lmlab encodes without special tokens):
# "pair": [CLS] a [SEP] (b [SEP]) as its tasks and encoders read; "source": an encoder-decoder's input closed by
# [SEP], after UL2's [S2S] mode token for ul2 runs; None: a decoder continues the text as it is.
TEMPLATES = ("pair", "source", "source_ul2")


def hf_tokenizer(tokenizer: TrainedTokenizer, template: str | None, max_length: int, segments: bool) -> Any:
    """lmlab's tokenizer as a transformers fast tokenizer: the same ids for the same text, special tokens named,
    inputs padded on the right (lmlab's classifiers read the last real token of a decoder), and token type ids
    only for a model with segment embeddings (GPT-2 would add them to its input as token embeddings)."""
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer.from_str(tokenizer.tokenizer.to_str())
    ids = {name: tokenizer.token_id(name) for name in (CLS, SEP)}
    if template == "pair":
        tok.post_processor = processors.TemplateProcessing(
            single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B:1 {SEP}:1", special_tokens=list(ids.items())
        )
    elif template in ("source", "source_ul2"):
        mode = f"{S2S} " if template == "source_ul2" else ""
        specials = [*ids.items(), *([(S2S, tokenizer.token_id(S2S))] if mode else [])]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{mode}$A {SEP}", pair=f"{mode}$A {SEP} $B:1 {SEP}:1", special_tokens=specials
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        unk_token=UNK,
        cls_token=CLS,
        sep_token=SEP,
        mask_token=MASK,
        # A decoder's documents end with [SEP], so generation stops there.
        eos_token=SEP,
        model_max_length=max_length,
        padding_side="right",
        model_input_names=["input_ids", *(["token_type_ids"] if segments else []), "attention_mask"],
    )


def hf_tokenizer_file(directory: Path) -> Tokenizer:
    """The HF tokenizer in `directory`: its tokenizer.json, or the fast conversion transformers makes of a slow one."""
    path = directory / "tokenizer.json"
    if path.is_file():
        try:
            return Tokenizer.from_file(str(path))
        except Exception as err:
            raise InputError(f"{path} is not a valid tokenizer.json: {err}") from err
    try:
        from transformers import AutoTokenizer
    except ImportError as err:
        raise MissingInputFile(
            f"{directory} has no tokenizer.json; converting its slow tokenizer needs transformers "
            "(pip install -e .[hf])"
        ) from err
    try:
        fast = AutoTokenizer.from_pretrained(str(directory), use_fast=True)
    except Exception as err:
        raise MissingInputFile(
            f"{directory} has no tokenizer.json and no tokenizer transformers can load: {err}"
        ) from err
    return Tokenizer.from_str(fast.backend_tokenizer.to_str())


def with_lmlab_specials(tok: Tokenizer, model_vocab: int) -> tuple[Tokenizer, list[str]]:
    """`tok` with lmlab's special tokens ([PAD], [UNK], [CLS], [SEP], [MASK]) appended when it lacks them, then padded
    with never-produced [UNUSEDi] tokens up to `model_vocab` when the model's embedding table is larger than the
    tokenizer (checkpoints round their vocabulary up); returns it and the tokens added, in id order."""
    out = Tokenizer.from_str(tok.to_str())
    added = [t for t in (PAD, UNK, CLS, SEP, MASK) if out.token_to_id(t) is None]
    padding = [f"[UNUSED{i}]" for i in range(max(0, model_vocab - out.get_vocab_size() - len(added)))]
    out.add_special_tokens(added + padding)
    return out, added + padding
