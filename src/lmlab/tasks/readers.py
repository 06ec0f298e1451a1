"""Local-file readers for downstream tasks. Every malformed row is an error naming the file and line."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from lmlab.data.text_files import inspect_text_file
from lmlab.errors import InputError
from lmlab.tasks.examples import PairExample, QAExample, TaggedExample, TextExample

log = logging.getLogger(__name__)


class DataFileError(InputError):
    def __init__(self, path: Path, line: int, problem: str) -> None:
        super().__init__(f"{path}:{line}: {problem}")


def _rows(path: Path, tsv_quoting: bool = False) -> Iterator[tuple[int, dict]]:
    """(line number, row as dict) from .csv (standard quoting), .tsv (tabs separate, nothing is quoted, unless
    `tsv_quoting`: CSV quote rules with tabs) or .jsonl.
    A UTF-8 BOM and CRLF line ends are fine; blank lines are not rows. The count of rows read is checked against
    the file's lines and logged."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".jsonl", ".json"):
        raise InputError(f"task data file {path}: unsupported format {suffix!r}; expected .csv, .tsv or .jsonl")
    stats = inspect_text_file(path, "task data file")
    rows = 0
    with open(path, newline="" if suffix in (".csv", ".tsv") else None, encoding="utf-8-sig") as f:
        numbered = _delimited(path, f, suffix, tsv_quoting) if suffix in (".csv", ".tsv") else _json_lines(path, f)
        for number, row in numbered:
            rows += 1
            yield number, row
    data_lines = stats.lines - stats.blank_lines - (suffix in (".csv", ".tsv"))
    if rows != data_lines:
        if suffix == ".csv" or tsv_quoting:
            log.warning(
                "%s: %d rows from %d non-blank lines after the header: some quoted fields hold line breaks",
                path,
                rows,
                data_lines,
            )
        else:
            raise DataFileError(path, stats.lines, f"read {rows} rows but the file has {data_lines} data lines")
    log.info("%s: %d rows", path, rows)


def _delimited(path: Path, f: TextIO, suffix: str, tsv_quoting: bool) -> Iterator[tuple[int, dict]]:
    if suffix == ".csv":
        reader = csv.reader(f, strict=True)
    elif tsv_quoting:
        reader = csv.reader(f, delimiter="\t", strict=True)
    else:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
        header = next(reader, None)
        if not header or not all(name.strip() for name in header):
            raise DataFileError(path, 1, f"expected a header row naming every column, got {header}")
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                raise DataFileError(path, reader.line_num, f"expected {len(header)} columns ({header}), got {len(row)}")
            yield reader.line_num, dict(zip(header, row, strict=True))
    except csv.Error as err:
        raise DataFileError(path, reader.line_num, f"not valid {suffix[1:].upper()} ({err})") from err


def _json_lines(path: Path, f: TextIO) -> Iterator[tuple[int, dict]]:
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


def _field(path: Path, line: int, row: dict, column: str):
    if column not in row or row[column] is None or (isinstance(row[column], str) and not row[column].strip()):
        raise DataFileError(path, line, f"missing or empty column {column!r} (columns: {sorted(row)})")
    return row[column]


def read_classification(
    path: Path, text_column: str, label_column: str, pair_column: str | None, tsv_quoting: bool = False
) -> list[TextExample]:
    examples = []
    for line, row in _rows(path, tsv_quoting):
        pair = str(_field(path, line, row, pair_column)) if pair_column else None
        text, label = str(_field(path, line, row, text_column)), str(_field(path, line, row, label_column))
        examples.append(TextExample(text, label, pair))
    if not examples:
        raise InputError(f"task data file {path} holds no examples")
    return examples


def read_conll(path: Path, token_column: int, tag_column: int) -> list[TaggedExample]:
    """Whitespace-separated columns, one token per line, a blank line between sentences; -DOCSTART- skipped."""
    inspect_text_file(path, "task data file")
    examples: list[TaggedExample] = []
    tokens: list[str] = []
    tags: list[str] = []
    with open(path, encoding="utf-8-sig") as f:
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
        raise InputError(f"task data file {path} holds no sentences")
    return examples


def read_tagged_jsonl(path: Path, token_column: str, tag_column: str) -> list[TaggedExample]:
    examples = []
    for line, row in _rows(path):
        tokens, tags = _field(path, line, row, token_column), _field(path, line, row, tag_column)
        if not isinstance(tokens, list) or not isinstance(tags, list) or len(tokens) != len(tags):
            raise DataFileError(path, line, f"{token_column!r} and {tag_column!r} must be lists of equal length")
        examples.append(TaggedExample([str(t) for t in tokens], [str(t) for t in tags]))
    return examples


def read_pairs(path: Path, source_column: str, target_column: str, tsv_quoting: bool = False) -> list[PairExample]:
    examples = [
        PairExample(str(_field(path, line, row, source_column)), str(_field(path, line, row, target_column)))
        for line, row in _rows(path, tsv_quoting)
    ]
    if not examples:
        raise InputError(f"task data file {path} holds no examples")
    return examples


def read_squad(path: Path) -> list[QAExample]:
    """SQuAD-format json: {"data": [{"paragraphs": [{"context", "qas": [{"question", "answers": [{"text",
    "answer_start"}]}]}]}]}. Every answer must appear in its context at its answer_start."""
    inspect_text_file(path, "task data file", max_line_bytes=None)  # SQuAD files are often one long line
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
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
                            raise InputError(f"{path}: {where}: answer {text!r} is not at answer_start {start}")
                    if not answers:
                        raise InputError(f"{path}: {where}: no answers (SQuAD v2 unanswerables are not supported)")
                    examples.append(QAExample(qa["question"], context, *map(list, zip(*answers, strict=True))))
    except (KeyError, TypeError) as err:
        raise InputError(f"{path}: not SQuAD format (expected data[].paragraphs[].qas[].answers[]): {err!r}") from err
    if not examples:
        raise InputError(f"task data file {path} holds no questions")
    return examples
