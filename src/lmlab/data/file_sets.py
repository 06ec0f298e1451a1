"""`data.files` as the user writes it: paths and glob patterns (`/data/shard-*.txt.gz`, `**` for subdirectories),
each file plain or compressed (.gz, .zst), expanded into one sorted list of files of one format."""

from __future__ import annotations

import gzip
import os
from fnmatch import fnmatchcase
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
    path, a file named twice (also through a link) or a directory reached twice through links is refused, naming it.
    A pattern matches as `glob` does (`**` for any number of directories, hidden names only by a pattern that
    starts with a dot), following directory links but never round a loop."""
    paths: list[Path] = []
    for pattern in patterns:
        text = str(Path(pattern).expanduser())
        if _GLOB & set(pattern):
            matches = sorted(_matching_files(text, key, pattern))
            if not matches:
                raise MissingInputFile(f"{key}: the pattern {pattern} matches no file")
            paths += matches
        elif Path(text).is_file():
            paths.append(Path(text))
        else:
            raise MissingInputFile(f"{key}: {pattern} does not exist or is not a file")
    named: dict[Path, list[str]] = {}
    for path in paths:
        named.setdefault(path.resolve(), []).append(str(path))
    twice = {real: names for real, names in named.items() if len(names) > 1}
    if twice:
        real, names = next(iter(twice.items()))
        how = "the same path" if len(set(names)) == 1 else "links to one file"
        more = f" ({len(twice)} files are reached more than once)" if len(twice) > 1 else ""
        raise InputError(
            f"{key} reaches {real} {len(names)} times ({how}: {sorted(set(names))}), so its text would be read "
            f"{len(names)} times; name each file once{more}"
        )
    return list(named)


def _matching_files(text: str, key: str, pattern: str) -> list[Path]:
    parts = Path(text).parts
    first = next(i for i, part in enumerate(parts) if _GLOB & set(part))
    base, wanted = Path(*parts[:first]) if first else Path("."), parts[first:]
    depth = None if "**" in wanted else len(wanted) - 1  # directories below base a match can be in
    found, seen = [], {os.path.realpath(base)}
    for root, dirs, files in os.walk(base, followlinks=True):
        rel = Path(root).relative_to(base).parts
        for name in sorted(dirs):
            real = os.path.realpath(os.path.join(root, name))
            if depth is not None and len(rel) >= depth:
                dirs.remove(name)
            elif real in seen:
                raise InputError(
                    f"{key}: the pattern {pattern} reaches the directory {real} twice (again through "
                    f"{os.path.join(root, name)}, a link): a link loop, or two links to one directory, would be "
                    "walked without end or read twice; name the files without the link"
                )
            else:
                seen.add(real)
        found += [Path(root) / f for f in files if _matches(wanted, (*rel, f)) and (Path(root) / f).is_file()]
    return found


def _matches(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    """Whether path `parts` match `pattern`'s parts as glob matches them: `**` spans any number of (non-hidden)
    directories, and a hidden name matches only a pattern part that starts with a dot."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_matches(pattern[1:], parts[i:]) for i in range(len(parts) + 1) if not _hidden(parts[:i]))
    return (
        bool(parts)
        and (not parts[0].startswith(".") or pattern[0].startswith("."))
        and fnmatchcase(parts[0], pattern[0])
        and _matches(pattern[1:], parts[1:])
    )


def _hidden(parts: tuple[str, ...]) -> bool:
    return any(part.startswith(".") for part in parts)


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
