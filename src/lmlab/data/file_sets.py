"""`data.files` as the user writes it: paths and glob patterns (`/data/shard-*.txt.gz`, `**` for subdirectories),
each file plain or compressed (.gz, .zst), expanded into one sorted list of files of one format."""

from __future__ import annotations

import glob
import gzip
from pathlib import Path
from typing import BinaryIO

import zstandard

from lmlab.errors import InputError, MissingInputFile

# The record format of a file's last suffix before any compression suffix, and the `datasets` builder reading it.
FORMATS = {".txt": "text", ".text": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
COMPRESSIONS = (".gz", ".zst")
_GLOB = set("*?[")
# What reading a corrupt or truncated compressed file raises (gzip.BadGzipFile is an OSError).
DECOMPRESSION_ERRORS = (OSError, EOFError, zstandard.ZstdError)


def expand(patterns: list[str], key: str = "data.files") -> list[Path]:
    """Every file `patterns` name, in order (each pattern's matches sorted); a pattern matching nothing, a missing
    path or a file named twice is refused, naming it."""
    paths: list[Path] = []
    for pattern in patterns:
        text = str(Path(pattern).expanduser())
        if _GLOB & set(pattern):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not matches:
                raise MissingInputFile(f"{key}: the pattern {pattern} matches no file")
            paths += matches
        elif Path(text).is_file():
            paths.append(Path(text))
        else:
            raise MissingInputFile(f"{key}: {pattern} does not exist or is not a file")
    resolved = [p.resolve() for p in paths]
    twice = sorted({str(p) for p in resolved if resolved.count(p) > 1})
    if twice:
        raise InputError(f"{key} names {twice} more than once (its text would be read twice); name each file once")
    return resolved


def compression(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return suffix if suffix in COMPRESSIONS else None


def file_format(path: Path) -> str | None:
    """The `datasets` builder of `path` (text, json, parquet) by its suffix under any compression; None if unknown."""
    inner = path.with_suffix("") if compression(path) else path
    return FORMATS.get(inner.suffix.lower())


def one_format(paths: list[Path], key: str = "data.files") -> str:
    """The format all `paths` share; refuses unknown formats, mixed formats and compressed parquet."""
    formats = {file_format(p) for p in paths}
    known = sorted(FORMATS) + [f"{s}{c}" for s in FORMATS if s != ".parquet" for c in COMPRESSIONS]
    if None in formats or len(formats) > 1:
        got = sorted({"".join(p.suffixes[-2:]) for p in paths})
        raise InputError(f"{key} must all have one of the formats {known} (one format per run); got {got}")
    packed = [str(p) for p in paths if compression(p) and file_format(p) == "parquet"]
    if packed:
        raise InputError(f"{key}: {packed} are compressed parquet files; parquet compresses itself, give .parquet")
    return formats.pop() or ""


def open_bytes(path: Path) -> BinaryIO:
    """`path`'s content, decompressed as it is read."""
    kind = compression(path)
    if kind == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if kind == ".zst":
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    return open(path, "rb")
