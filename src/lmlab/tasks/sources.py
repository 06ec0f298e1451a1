"""Where downstream examples come from: the synthetic world, local files, or Hugging Face datasets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lmlab.data.synthetic import World
from lmlab.errors import InputError
from lmlab.tasks.examples import PairExample, QAExample, TaggedExample, TextExample
from lmlab.tasks.readers import read_classification, read_conll, read_pairs, read_squad, read_tagged_jsonl

# Downstream documents start far beyond any pretraining corpus of the same world, so fine-tuning text is unseen.
SYNTHETIC_OFFSET = 10_000_000
_WORD = re.compile(r"\w+(?:[-']\w+)*|[^\w\s]")

Example = TextExample | TaggedExample | QAExample | PairExample


def load_examples(cfg: Any, split: str) -> list[Example]:
    """The examples of `split` (train or validation) for the task config `cfg`."""
    examples = {"synthetic": _synthetic, "files": _files, "hub": _hub}[cfg.source](cfg, split)
    if split == "train" and cfg.max_train_examples is not None:
        examples = examples[: cfg.max_train_examples]
    return examples


def _synthetic(cfg: Any, split: str) -> list[Example]:
    w = cfg.world
    world = World(w.seed, n_people=w.people, n_places=w.places, n_orgs=w.organisations)
    start = SYNTHETIC_OFFSET + (0 if split == "train" else cfg.train_examples)
    count = cfg.train_examples if split == "train" else cfg.validation_examples
    texts = {"document": world.document, "snippet": world.snippet, "mention": world.mention}
    documents = [texts[cfg.synthetic_text](i) for i in range(start, start + count)]
    if cfg.family == "token_classification":
        return [tagged_words(d.text, d.entities) for d in documents]
    if cfg.family == "extractive_qa":
        return [QAExample(q, d.text, [answer], [start]) for d in documents for q, answer, start in d.facts]
    if cfg.family == "seq2seq":
        return [PairExample(d.text, d.headline) for d in documents]
    return [TextExample(d.text, getattr(d, cfg.label_field)) for d in documents]


def tagged_words(text: str, entities: list[tuple[int, int, str]]) -> TaggedExample:
    """Words (and punctuation) of `text` with BIO tags from character-span entities."""
    tokens, tags = [], []
    for match in _WORD.finditer(text):
        tag = "O"
        for start, end, kind in entities:
            if start <= match.start() < end:
                tag = ("B-" if match.start() == start or not tags or tags[-1] == "O" else "I-") + kind
                break
        tokens.append(match.group())
        tags.append(tag)
    return TaggedExample(tokens, tags)


def _files(cfg: Any, split: str) -> list[Example]:
    path = Path(cfg.train_file if split == "train" else cfg.validation_file).expanduser()
    if cfg.family == "token_classification":
        if path.suffix.lower() in (".jsonl", ".json"):
            return read_tagged_jsonl(path, cfg.token_column, cfg.tag_column)
        return read_conll(path, cfg.conll_token_index, cfg.conll_tag_index)
    if cfg.family == "extractive_qa":
        return read_squad(path)
    if cfg.family == "seq2seq":
        return read_pairs(path, cfg.source_column, cfg.target_column, cfg.tsv_quoting)
    return read_classification(path, cfg.text_column, cfg.label_column, cfg.text_pair_column, cfg.tsv_quoting)


def _hub(cfg: Any, split: str) -> list[Example]:
    """A hub dataset by name (datasets.load_dataset) or a save_to_disk directory; ClassLabel ids become names."""
    import datasets

    path = Path(cfg.hub_path).expanduser()
    name = cfg.train_split if split == "train" else cfg.validation_split
    if path.is_dir():
        loaded = datasets.load_from_disk(str(path))
        if name not in loaded:
            raise InputError(f"task.hub_path={path} has splits {list(loaded)}; task split {name!r} is missing")
        data = loaded[name]
    else:
        data = datasets.load_dataset(cfg.hub_path, cfg.hub_name, split=name)
    columns = {
        "classification": (cfg.text_column, cfg.text_pair_column, cfg.label_column),
        "token_classification": (cfg.token_column, cfg.tag_column),
        "extractive_qa": (cfg.question_column, cfg.context_column, cfg.answers_column),
        "seq2seq": (cfg.source_column, cfg.target_column),
    }[cfg.family]
    for column in filter(None, columns):
        if column.split(".")[0] not in data.column_names:
            raise InputError(f"task column {column!r} is not in {cfg.hub_path} (columns: {data.column_names})")
    if cfg.family == "token_classification":
        names = _label_names(data.features[cfg.tag_column].feature)
        return [TaggedExample(list(row[cfg.token_column]), [names(t) for t in row[cfg.tag_column]]) for row in data]
    if cfg.family == "extractive_qa":
        unanswerable = sum(1 for row in data if not row[cfg.answers_column]["text"])
        if unanswerable:
            raise InputError(
                f"task.hub_path={cfg.hub_path} split {name!r}: {unanswerable} of {len(data)} questions have no answer "
                "(SQuAD v2 unanswerables are not supported); filter them out and pass the saved dataset"
            )
        return [
            QAExample(
                row[cfg.question_column],
                row[cfg.context_column],
                list(row[cfg.answers_column]["text"]),
                list(row[cfg.answers_column]["answer_start"]),
            )
            for row in data
        ]
    if cfg.family == "seq2seq":
        return [PairExample(_nested(row, cfg.source_column), _nested(row, cfg.target_column)) for row in data]
    names = _label_names(data.features[cfg.label_column])
    pair = cfg.text_pair_column
    return [
        TextExample(row[cfg.text_column], names(row[cfg.label_column]), row[pair] if pair else None) for row in data
    ]


def _nested(row: dict, column: str) -> str:
    """row["translation"]["de"] for column "translation.de"."""
    value: Any = row
    for key in column.split("."):
        value = value[key]
    return str(value)


def _label_names(feature: Any):
    """A function from a stored label to its name: ClassLabel ids map to their names, anything else to str."""
    if hasattr(feature, "int2str"):
        return lambda value: feature.int2str(int(value))
    return str
