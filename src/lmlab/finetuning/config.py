"""Structured-config schema of a fine-tuning run (`finetune.py`), registered with Hydra's ConfigStore."""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from lmlab.config_schema import at_least, choice, require_file
from lmlab.data.config import DataConfig, WorldConfig
from lmlab.errors import InputError
from lmlab.models import ModelConfig
from lmlab.runs.config import LoggerConfig, OptimConfig, PathsConfig, TrainerConfig, register_resolvers
from lmlab.tasks import FAMILIES

SOURCES = ("synthetic", "files", "hub")
SYNTHETIC_TEXTS = ("document", "snippet", "mention")
SYNTHETIC_LABELS = ("topic", "sentiment")


@dataclass
class TaskConfig:
    name: str = "synthetic_topic"
    family: str = "classification"  # classification | token_classification | extractive_qa | seq2seq
    source: str = "synthetic"  # synthetic | files | hub
    # synthetic: documents of the synthetic world that pretraining never saw; `label_field` topic | sentiment;
    # `synthetic_text` document (a whole document) | snippet (a sentence whose one topic word is rare) | mention
    # (a sentence naming a person: their topic is world knowledge). train/validation_examples count documents.
    world: WorldConfig = field(default_factory=WorldConfig)
    label_field: str = "topic"
    synthetic_text: str = "document"
    train_examples: int = 2000
    validation_examples: int = 500
    # files: .csv / .tsv / .jsonl (classification, seq2seq, tagged jsonl), CoNLL column files (.conll / .txt) or
    # SQuAD-format .json (extractive_qa)
    train_file: str = ""
    validation_file: str = ""
    # .tsv fields are taken as written (a leading quote is text); true reads them with CSV quote rules instead
    tsv_quoting: bool = False
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    token_column: str = "tokens"
    tag_column: str = "tags"
    conll_token_index: int = 0
    conll_tag_index: int = -1
    source_column: str = "source"  # seq2seq; hub columns may name a nested field: translation.de
    target_column: str = "target"
    question_column: str = "question"  # extractive_qa on the hub: SQuAD's columns
    context_column: str = "context"
    answers_column: str = "answers"
    # hub: a Hugging Face dataset name (or a save_to_disk directory) and its splits
    hub_path: str = ""
    hub_name: str | None = None
    train_split: str = "train"
    validation_split: str = "validation"
    # all sources
    max_train_examples: int | None = None  # the first N training examples (sample-efficiency curves)
    max_length: int = 128
    batch_size: int = 32
    head_dropout: float = 0.1
    main_metric: str | None = None  # the metric summary tables report; None: the family's (acc, f1, rougeL)
    # extractive_qa: question tokens kept, tokens between context windows' starts, longest answer predicted
    max_question_length: int = 64
    doc_stride: int = 128
    max_answer_length: int = 30
    # seq2seq: target tokens trained on and generated at evaluation
    max_target_length: int = 64

    def validate(self) -> None:
        choice("task.family", self.family, tuple(FAMILIES))
        choice("task.source", self.source, SOURCES)
        if self.source == "synthetic":
            choice("task.synthetic_text", self.synthetic_text, SYNTHETIC_TEXTS)
            if self.family == "classification":
                choice("task.label_field", self.label_field, SYNTHETIC_LABELS)
            at_least("task.train_examples", self.train_examples, 1)
            at_least("task.validation_examples", self.validation_examples, 1)
        at_least("task.batch_size", self.batch_size, 1)
        if not 0 <= self.head_dropout < 1:
            raise InputError(f"task.head_dropout must be in [0, 1), got {self.head_dropout}")
        if self.source == "files" and not (self.train_file and self.validation_file):
            raise InputError("task.source=files needs task.train_file and task.validation_file")
        if self.source == "files":
            require_file(self.train_file, "task.train_file")
            require_file(self.validation_file, "task.validation_file")
        if self.tsv_quoting and not (self.source == "files" and self.train_file.lower().endswith(".tsv")):
            raise InputError("task.tsv_quoting=true applies to .tsv task files only; it would be ignored here")
        if self.source == "hub" and not self.hub_path:
            raise InputError("task.source=hub needs task.hub_path (a dataset name or a save_to_disk directory)")
        if self.max_train_examples is not None and self.max_train_examples < 1:
            raise InputError(f"task.max_train_examples must be >= 1, got {self.max_train_examples}")
        if self.max_length < 4:
            raise InputError(f"task.max_length must be >= 4, got {self.max_length}")
        if self.family == "extractive_qa":
            room = self.max_length - self.max_question_length - 3
            if not 1 <= self.doc_stride <= room:
                raise InputError(
                    f"task.doc_stride={self.doc_stride} must be in [1, {room}]: the context room that task.max_length="
                    f"{self.max_length} leaves after task.max_question_length={self.max_question_length} and 3 "
                    "special tokens (a larger stride would skip context)"
                )
            if self.max_answer_length < 1:
                raise InputError(f"task.max_answer_length must be >= 1, got {self.max_answer_length}")
        if self.family == "seq2seq" and self.max_target_length < 2:
            raise InputError(f"task.max_target_length must be >= 2, got {self.max_target_length}")


@dataclass
class FinetuneConfig:
    # An MLflow run id, a pretraining run's output or export directory, or "none" (same architecture, from scratch).
    pretrained: str = "none"
    task: TaskConfig = field(default_factory=TaskConfig)
    # Used only with pretrained=none: the architecture and the data whose tokenizer to use.
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    experiment: str = "finetune"
    seed: int = 0

    def validate(self) -> None:
        if self.pretrained.lower() == "none" and self.task.max_length > self.model.max_positions:
            raise InputError(
                f"task.max_length={self.task.max_length} exceeds model.max_positions={self.model.max_positions}; "
                "lower task.max_length or raise model.max_positions"
            )


def register_finetune_configs() -> None:
    ConfigStore.instance().store(name="finetune_schema", node=FinetuneConfig)
    register_resolvers()
