"""Sequence-to-sequence generation (summarisation, translation) on any generative layout.

An encoder-decoder reads `source [SEP]` and its decoder writes `[CLS] target` -> `target [SEP]`, as the span and
denoising objectives pretrain it. A decoder or prefix-LM reads `source [SEP] target [SEP]` and learns only the
target (the prefix-LM reads the source bidirectionally). Evaluation decodes each source greedily, up to
`max_target_length` tokens, and scores the text with ROUGE-1/2/L and BLEU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchmetrics import MetricCollection

from lmlab.config_schema import at_least
from lmlab.data.synthetic import Document
from lmlab.data.tokenizer import TrainedTokenizer
from lmlab.errors import InputError
from lmlab.generation import GENERATIVE_LAYOUTS, GenerationConfig, generate
from lmlab.heads import IGNORE, LMHead, predict_tokens
from lmlab.models import Backbone, ModelConfig
from lmlab.tasks.base import TaskConfig, TaskFamily, TaskOutput
from lmlab.tasks.examples import PairExample
from lmlab.tasks.readers import rows, text_field
from lmlab.tasks.sources import nested
from lmlab.tasks.text_metrics import GenerationScore


@dataclass
class Seq2SeqConfig(TaskConfig):
    """Files: .csv, .tsv or .jsonl with a source and a target column. Hub columns may name a nested field
    (translation.de). Target tokens trained on and generated at evaluation: max_target_length."""

    family: str = "seq2seq"
    source_column: str = "source"
    target_column: str = "target"
    max_target_length: int = 64
    # .tsv fields are taken as written (a leading quote is text); true reads them with CSV quote rules instead
    tsv_quoting: bool = False

    def validate(self) -> None:
        super().validate()
        at_least("task.max_target_length", self.max_target_length, 2)
        if self.tsv_quoting and not (self.source == "files" and self.train_file.lower().endswith(".tsv")):
            raise InputError("task.tsv_quoting=true applies to .tsv task files only; it would be ignored here")


class Seq2Seq(TaskFamily):
    Config = Seq2SeqConfig
    main_metric = "rougeL"

    @staticmethod
    def from_synthetic(cfg: Seq2SeqConfig, documents: list[Document]) -> list[PairExample]:
        return [PairExample(d.text, d.headline) for d in documents]

    @staticmethod
    def read_file(cfg: Seq2SeqConfig, path: Path) -> list[PairExample]:
        return read_pairs(path, cfg.source_column, cfg.target_column, cfg.tsv_quoting)

    @staticmethod
    def hub_columns(cfg: Seq2SeqConfig) -> list[str]:
        return [cfg.source_column, cfg.target_column]

    @staticmethod
    def from_hub(cfg: Seq2SeqConfig, data) -> list[PairExample]:
        return [PairExample(nested(row, cfg.source_column), nested(row, cfg.target_column)) for row in data]

    def __init__(self, cfg, tokenizer: TrainedTokenizer, labels: list[str], model_cfg: ModelConfig) -> None:
        super().__init__(cfg, tokenizer, labels, model_cfg)
        if self.layout not in GENERATIVE_LAYOUTS:
            raise InputError(
                f"task.family=seq2seq needs a backbone that writes text (model.layout in {list(GENERATIVE_LAYOUTS)}); "
                f"this one is {self.layout}: fine-tune a clm, prefix_lm, span, denoise or ul2 run"
            )
        if self.layout != "encoder_decoder" and cfg.max_length < cfg.max_target_length + 8:
            raise InputError(
                f"task.max_length={cfg.max_length} must leave a decoder room for the source after "
                f"task.max_target_length={cfg.max_target_length} (at least 8 tokens more)"
            )

    @staticmethod
    def label_set(examples: list[PairExample]) -> list[str]:
        return []

    def detokenized(self, text: str) -> str:
        """`text` as the model can write it: through the tokenizer and back (case, spacing), for scoring."""
        tok = self.tokenizer.tokenizer
        return tok.decode(tok.encode(text, add_special_tokens=False).ids)

    def encode(self, example: PairExample) -> dict[str, np.ndarray]:
        tok = self.tokenizer.tokenizer
        source = tok.encode(example.source, add_special_tokens=False).ids
        target = [*tok.encode(example.target, add_special_tokens=False).ids[: self.cfg.max_target_length - 1]]
        target.append(self.sep_id)
        if self.layout == "encoder_decoder":
            out = self._pad([*source[: self.cfg.max_length - 1], self.sep_id])
            out["decoder_input_ids"] = _filled(self.cfg.max_target_length, self.pad_id, [self.cls_id, *target[:-1]])
            out["labels"] = _filled(self.cfg.max_target_length, IGNORE, target)
            return out
        source = [*source[: self.cfg.max_length - self.cfg.max_target_length - 1], self.sep_id]
        out = self._pad([*source, *target])
        # labels[t] is the token after position t: the target, predicted from the source's closing [SEP] on.
        out["labels"] = _filled(self.cfg.max_length, IGNORE, [IGNORE] * (len(source) - 1) + target)
        out["source_length"] = np.asarray(len(source))
        return out

    def features(self, examples: list[PairExample]) -> list[dict[str, np.ndarray]]:
        return [{**self.encode(e), "example_index": np.asarray(i)} for i, e in enumerate(examples)]

    def build_head(self, model_cfg: ModelConfig) -> nn.Module:
        return LMHead()

    def forward(self, backbone: Backbone, head: nn.Module, batch: dict[str, torch.Tensor]) -> TaskOutput:
        mask = batch["padding_mask"]
        if backbone.cfg.layout == "encoder_decoder":
            hidden = backbone.decode(batch["decoder_input_ids"], backbone(batch["input_ids"], mask), mask)
        else:
            prefix = batch["source_length"] if backbone.cfg.layout == "prefix_lm" else None
            hidden = backbone(batch["input_ids"], mask, prefix_lengths=prefix)
        loss = predict_tokens(hidden, batch["labels"], head, backbone).loss
        generated = torch.empty(0) if backbone.training else self.generate(backbone, batch)
        return TaskOutput(loss, generated)

    def generate(self, backbone: Backbone, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Greedy continuations of each source, (B, max_target_length), padded with [PAD]."""
        cfg = GenerationConfig(strategy="greedy", max_new_tokens=self.cfg.max_target_length)
        out = torch.full((batch["input_ids"].shape[0], self.cfg.max_target_length), self.pad_id)
        encoder_decoder = backbone.cfg.layout == "encoder_decoder"
        lengths = batch["n_real"] if encoder_decoder else batch["source_length"]
        for row, length in enumerate(lengths.tolist()):
            prompt = batch["input_ids"][row : row + 1, :length]
            ids = generate(backbone, prompt, cfg, self.sep_id, start_id=self.cls_id)
            new = ids[0, 1:] if encoder_decoder else ids[0, length:]
            new = new[: self.cfg.max_target_length]
            out[row, : len(new)] = new
        return out

    def metrics(self, examples: list[PairExample]) -> MetricCollection:
        return MetricCollection({"generation": GenerationScore([self.detokenized(e.target) for e in examples])})

    def update_metrics(self, metrics: MetricCollection, out: TaskOutput, batch: dict[str, torch.Tensor]) -> None:
        texts = [self.tokenizer.tokenizer.decode(row.tolist(), skip_special_tokens=True) for row in out.predictions]
        metrics["generation"].update(batch["example_index"], texts)


def _filled(length: int, fill: int, values: list[int]) -> np.ndarray:
    array = np.full(length, fill, dtype=np.int64)
    array[: len(values)] = values
    return array


FAMILY = Seq2Seq


def read_pairs(path: Path, source_column: str, target_column: str, tsv_quoting: bool = False) -> list[PairExample]:
    examples = [
        PairExample(text_field(path, line, row, source_column), text_field(path, line, row, target_column))
        for line, row in rows(path, tsv_quoting)
    ]
    if not examples:
        raise InputError(f"task data file {path} holds no examples")
    return examples
