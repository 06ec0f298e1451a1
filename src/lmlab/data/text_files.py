"""A look at a text file before any reader parses it, in bounded memory (one chunk at a time).

Readers further down (csv, json, `datasets` builders, tokenizers) fail on an empty, binary or non-UTF-8 file with
errors that do not name it, and hold a whole line in memory however long it is. `inspect_text_file` refuses those
files with the path, the line and what would be accepted."""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from lmlab.data.file_sets import DECOMPRESSION_ERRORS, open_bytes
from lmlab.errors import InputError, MissingInputFile

CHUNK_BYTES = 1 << 20
# The longest line a line-oriented text file may hold. A line is a unit lmlab reads whole (a document of a .txt
# corpus, a row of a task file); a 50 MB line is a file that was not split into lines, and reading it whole would
# take gigabytes in the tokenizer.
MAX_LINE_BYTES = 1 << 20


@dataclass
class TextFileStats:
    lines: int  # physical lines
    blank_lines: int  # lines holding only whitespace


def inspect_text_file(path: Path, what: str, max_line_bytes: int | None = MAX_LINE_BYTES) -> TextFileStats:
    """Check that `path` (named as `what` in errors, e.g. "data.files") is non-empty UTF-8 text (a BOM is allowed)
    without NUL bytes whose lines are at most `max_line_bytes` long; count its lines. A .gz or .zst file is checked
    as the text it holds; a corrupt one is refused."""
    if not path.is_file():
        raise MissingInputFile(f"{what}: {path} does not exist or is not a file")
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = blank = 0  # complete lines seen so far
    line_bytes, line_blank = 0, True  # the line being read
    offset = 0
    with open_bytes(path) as f:
        while chunk := _read(f, path, what):
            nul = chunk.find(b"\0")
            if nul >= 0:
                raise InputError(
                    f"{what}: {path} is not a text file (a NUL byte at byte {offset + nul}); expected UTF-8 text"
                )
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:
                line = lines + chunk.count(b"\n", 0, max(err.start, 0)) + 1
                raise InputError(
                    f"{what}: {path} is not UTF-8 text: byte {offset + err.start} (line {line}) is "
                    f"{chunk[err.start : err.start + 1]!r}; convert it first, e.g. iconv -f latin1 -t utf-8"
                ) from None
            *ended, rest = chunk.split(b"\n")
            for piece in ended:
                _check_length(line_bytes + len(piece), lines + 1, path, what, max_line_bytes)
                blank += line_blank and not piece.strip()
                lines += 1
                line_bytes, line_blank = 0, True
            line_bytes += len(rest)
            line_blank = line_blank and not rest.strip()
            _check_length(line_bytes, lines + 1, path, what, max_line_bytes)
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise InputError(f"{what}: {path} is not UTF-8 text: it ends inside a multi-byte character") from None
    if line_bytes:
        lines += 1
        blank += line_blank
    if lines == blank:
        raise InputError(f"{what}: {path} is empty (no text in it)")
    return TextFileStats(lines, blank)


def _read(f: BinaryIO, path: Path, what: str) -> bytes:
    try:
        return f.read(CHUNK_BYTES)
    except DECOMPRESSION_ERRORS as err:
        raise InputError(f"{what}: {path} could not be decompressed: {type(err).__name__}: {err}") from err


def _check_length(length: int, line: int, path: Path, what: str, max_line_bytes: int | None) -> None:
    if max_line_bytes is not None and length > max_line_bytes:
        raise InputError(
            f"{what}: {path} line {line} is longer than {max_line_bytes:,} bytes; lmlab reads a line of this file "
            "whole, so split the text into lines (documents) or paragraphs first"
        )
