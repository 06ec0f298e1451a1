"""The row machinery of downstream task files: delimited and JSON-lines rows with their line numbers; every
malformed row is an error naming the file and line. Each family's own reader (in its module) builds on it."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from lmlab.data.text_files import inspect_text_file
from lmlab.errors import InputError

log = logging.getLogger(__name__)


class DataFileError(InputError):
    def __init__(self, path: Path, line: int, problem: str) -> None:
        super().__init__(f"{path}:{line}: {problem}")


def rows(path: Path, tsv_quoting: bool = False) -> Iterator[tuple[int, dict]]:
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


def field(path: Path, line: int, row: dict, column: str):
    if column not in row or row[column] is None or (isinstance(row[column], str) and not row[column].strip()):
        raise DataFileError(path, line, f"missing or empty column {column!r} (columns: {sorted(row)})")
    return row[column]


def text_field(path: Path, line: int, row: dict, column: str) -> str:
    """A field that holds text: a JSON list, object or number there is refused, not read as its Python repr."""
    value = field(path, line, row, column)
    if not isinstance(value, str):
        raise DataFileError(path, line, f"column {column!r} holds {_kind(value)}, not text")
    return value


def label_field(path: Path, line: int, row: dict, column: str) -> str:
    """A label: text, or a whole number (JSON `0`, `1`); a list, object, fraction or boolean is refused."""
    value = field(path, line, row, column)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataFileError(path, line, f"column {column!r} holds {_kind(value)}; a label is text or a whole number")
    return str(value)


def text_list_field(path: Path, line: int, row: dict, column: str) -> list[str]:
    """A field that holds a list of strings (the words or tags of a sentence)."""
    value = field(path, line, row, column)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataFileError(path, line, f"column {column!r} holds {_kind(value)}; expected a list of strings")
    return value


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list" if all(isinstance(v, str) for v in value) else "a list that is not all strings"
    if isinstance(value, dict):
        return "an object"
    return f"{type(value).__name__} {value!r}"


def refuse_confusable_labels(labels: list[str], where: str) -> None:
    """Refuse labels that differ only by surrounding whitespace or case (`pos`, `pos `, `Pos`): as written they
    would be separate classes, which no data set means."""
    groups: dict[str, list[str]] = {}
    for label in labels:
        groups.setdefault(label.strip().casefold(), []).append(label)
    clashes = [sorted(group) for group in groups.values() if len(group) > 1]
    if clashes:
        raise InputError(
            f"{where}: the labels {clashes[0]!r} differ only by surrounding whitespace or case, so they would be "
            f"separate classes{f' ({len(clashes)} such groups)' * (len(clashes) > 1)}; write each label one way"
        )
