"""Local-file readers for downstream tasks. Every malformed row is an error naming the file and line."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from lmlab.tasks.examples import PairExample, QAExample, TaggedExample, TextExample


class DataFileError(ValueError):
    def __init__(self, path: Path, line: int, problem: str) -> None:
        super().__init__(f"{path}:{line}: {problem}")


def _rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, row as dict) from .csv, .tsv or .jsonl."""
    if not path.is_file():
        raise FileNotFoundError(f"task data file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            for row in reader:
                if None in row or None in row.values():
                    raise DataFileError(path, reader.line_num, f"expected {len(reader.fieldnames or [])} columns")
                yield reader.line_num, row
    elif suffix in (".jsonl", ".json"):
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataFileError(path, number, f"not valid JSON ({err.msg})") from err
                if not isinstance(row, dict):
                    raise DataFileError(path, number, "expected a JSON object per line")
                yield number, row
    else:
        raise ValueError(f"task data file {path}: unsupported format {suffix!r}; expected .csv, .tsv or .jsonl")


def _field(path: Path, line: int, row: dict, column: str):
    if column not in row or row[column] is None or (isinstance(row[column], str) and not row[column].strip()):
        raise DataFileError(path, line, f"missing or empty column {column!r} (columns: {sorted(row)})")
    return row[column]


def read_classification(path: Path, text_column: str, label_column: str, pair_column: str | None) -> list[TextExample]:
    examples = []
    for line, row in _rows(path):
        pair = str(_field(path, line, row, pair_column)) if pair_column else None
        text, label = str(_field(path, line, row, text_column)), str(_field(path, line, row, label_column))
        examples.append(TextExample(text, label, pair))
    if not examples:
        raise ValueError(f"task data file {path} holds no examples")
    return examples


def read_conll(path: Path, token_column: int, tag_column: int) -> list[TaggedExample]:
    """Whitespace-separated columns, one token per line, a blank line between sentences; -DOCSTART- skipped."""
    if not path.is_file():
        raise FileNotFoundError(f"task data file {path} does not exist")
    examples: list[TaggedExample] = []
    tokens: list[str] = []
    tags: list[str] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            columns = line.split()
            if not columns or columns[0] == "-DOCSTART-":
                if tokens:
                    examples.append(TaggedExample(tokens, tags))
                tokens, tags = [], []
                continue
            needed = max(token_column, tag_column) + 1 if min(token_column, tag_column) >= 0 else 1
            if len(columns) < needed or len(columns) < 2:
                raise DataFileError(path, number, f"expected at least {max(needed, 2)} columns, got {len(columns)}")
            tag = columns[tag_column]
            if tag != "O" and not (tag[:2] in ("B-", "I-") and len(tag) > 2):
                raise DataFileError(path, number, f"tag {tag!r} is not BIO (O, B-X or I-X)")
            tokens.append(columns[token_column])
            tags.append(tag)
    if tokens:
        examples.append(TaggedExample(tokens, tags))
    if not examples:
        raise ValueError(f"task data file {path} holds no sentences")
    return examples


def read_tagged_jsonl(path: Path, token_column: str, tag_column: str) -> list[TaggedExample]:
    examples = []
    for line, row in _rows(path):
        tokens, tags = _field(path, line, row, token_column), _field(path, line, row, tag_column)
        if not isinstance(tokens, list) or not isinstance(tags, list) or len(tokens) != len(tags):
            raise DataFileError(path, line, f"{token_column!r} and {tag_column!r} must be lists of equal length")
        examples.append(TaggedExample([str(t) for t in tokens], [str(t) for t in tags]))
    return examples


def read_pairs(path: Path, source_column: str, target_column: str) -> list[PairExample]:
    examples = [
        PairExample(str(_field(path, line, row, source_column)), str(_field(path, line, row, target_column)))
        for line, row in _rows(path)
    ]
    if not examples:
        raise ValueError(f"task data file {path} holds no examples")
    return examples


def read_squad(path: Path) -> list[QAExample]:
    """SQuAD-format json: {"data": [{"paragraphs": [{"context", "qas": [{"question", "answers": [{"text",
    "answer_start"}]}]}]}]}. Every answer must appear in its context at its answer_start."""
    if not path.is_file():
        raise FileNotFoundError(f"task data file {path} does not exist")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataFileError(path, err.lineno, f"not valid JSON ({err.msg})") from err
    examples = []
    try:
        for i, article in enumerate(document["data"]):
            for j, paragraph in enumerate(article["paragraphs"]):
                context = paragraph["context"]
                for k, qa in enumerate(paragraph["qas"]):
                    where = f"data[{i}].paragraphs[{j}].qas[{k}]"
                    answers = [(str(a["text"]), int(a["answer_start"])) for a in qa["answers"]]
                    for text, start in answers:
                        if context[start : start + len(text)] != text:
                            raise ValueError(f"{path}: {where}: answer {text!r} is not at answer_start {start}")
                    if not answers:
                        raise ValueError(f"{path}: {where}: no answers (SQuAD v2 unanswerables are not supported)")
                    examples.append(QAExample(qa["question"], context, *map(list, zip(*answers, strict=True))))
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path}: not SQuAD format (expected data[].paragraphs[].qas[].answers[]): {err!r}") from err
    if not examples:
        raise ValueError(f"task data file {path} holds no questions")
    return examples
