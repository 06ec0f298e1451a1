"""A look at a text file before any reader parses it, in bounded memory (one chunk at a time).

Readers further down (csv, json, `datasets` builders, tokenizers) fail on an empty, binary or non-UTF-8 file with
errors that do not name it, and hold a whole line in memory however long it is. `inspect_text_file` refuses those
files with the path, the line and what would be accepted."""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterator
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
    lone_crs: int = 0  # carriage returns not followed by a line feed


def inspect_text_file(path: Path, what: str, max_line_bytes: int | None = MAX_LINE_BYTES) -> TextFileStats:
    """Check that `path` (named as `what` in errors, e.g. "data.files") is non-empty UTF-8 text (a BOM is allowed)
    without NUL bytes whose lines are at most `max_line_bytes` long; count its lines. A .gz or .zst file is checked
    as the text it holds; a corrupt one is refused."""
    if not path.is_file():
        raise MissingInputFile(f"{what}: {path} does not exist or is not a file")
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = blank = lone_crs = 0  # complete lines seen so far; CRs not before a LF
    line_bytes, line_blank = 0, True  # the line being read
    pending_cr = False
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
            # A CR that ends a chunk is counted once the next chunk shows what follows it.
            lone_crs += (pending_cr and not chunk.startswith(b"\n")) + chunk.count(b"\r") - chunk.count(b"\r\n")
            pending_cr = chunk.endswith(b"\r")
            lone_crs -= pending_cr
            *ended, rest = chunk.split(b"\n")
            for piece in ended:
                _check_length(line_bytes + len(piece), lines + 1, path, what, max_line_bytes, lone_crs)
                blank += line_blank and not piece.strip()
                lines += 1
                line_bytes, line_blank = 0, True
            line_bytes += len(rest)
            line_blank = line_blank and not rest.strip()
            _check_length(line_bytes, lines + 1, path, what, max_line_bytes, lone_crs)
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise InputError(f"{what}: {path} is not UTF-8 text: it ends inside a multi-byte character") from None
    if line_bytes:
        lines += 1
        blank += line_blank
    lone_crs += pending_cr
    if lines == blank:
        raise InputError(f"{what}: {path} is empty (no text in it)")
    if lone_crs >= lines:
        _refuse_cr_lines(path, what, lone_crs)
    return TextFileStats(lines, blank, lone_crs)


def text_lines(path: Path) -> Iterator[str]:
    """The lines of a text file (plain, .gz or .zst) as it was inspected: UTF-8 with an optional BOM, split at
    "\n" only (a CR, U+2028 or NEL inside a line is text, not a line break), each without its line ending."""
    with open_bytes(path) as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="\n") as f:
        for line in f:
            yield line.removesuffix("\n").removesuffix("\r")


def checked_lines(path: Path, what: str) -> list[tuple[int, str]]:
    """The non-blank lines of a text file with their line numbers (from 1), once `inspect_text_file` has refused
    what is not text (naming `what`, the file and the byte)."""
    inspect_text_file(path, what)
    return [(number, line) for number, line in enumerate(text_lines(path), 1) if line.strip()]


def _read(f: BinaryIO, path: Path, what: str) -> bytes:
    try:
        return f.read(CHUNK_BYTES)
    except DECOMPRESSION_ERRORS as err:
        raise InputError(f"{what}: {path} could not be decompressed: {type(err).__name__}: {err}") from err


def _refuse_cr_lines(path: Path, what: str, lone_crs: int) -> None:
    raise InputError(
        f"{what}: {path} ends its lines with a carriage return alone (CR, as classic Mac OS did; {lone_crs:,} seen); "
        "lmlab reads lines ended by LF or CRLF: convert it first, e.g. tr '\\r' '\\n' < old > new"
    )


def _check_length(length: int, line: int, path: Path, what: str, max_line_bytes: int | None, lone_crs: int) -> None:
    if max_line_bytes is not None and length > max_line_bytes:
        if lone_crs >= line:
            _refuse_cr_lines(path, what, lone_crs)
        raise InputError(
            f"{what}: {path} line {line} is longer than {max_line_bytes:,} bytes; lmlab reads a line of this file "
            "whole, so split the text into lines (documents) or paragraphs first"
        )
