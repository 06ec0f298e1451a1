"""Sources of documents: the synthetic world, local files, and Hugging Face datasets.

A `Corpus` knows its fingerprint without reading its documents (synthetic: the generator config;
files: their bytes; hub: the dataset's own fingerprint), so a cache hit never re-reads the text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path

from lmlab.data import file_sets
from lmlab.data.cache import file_digest, fingerprint
from lmlab.data.config import DataConfig
from lmlab.data.synthetic import GENERATOR_VERSION, World
from lmlab.data.text_files import MAX_LINE_BYTES, checked_lines, inspect_text_file, text_lines
from lmlab.errors import InputError, MissingInputFile

SPLITS = ("train", "validation")
_WIKITEXT_TITLE = re.compile(r"^ = [^=].* = $")
# Part of a files corpus' fingerprint: caches of text read differently (v1 split paragraphs on "\n\n" only; v2
# carried a paragraph on from one file into the next; v3 read through `datasets`, which also broke lines at \r, U+2028
# and NEL) are not reused.
_TEXT_READER_VERSION = 4


@dataclass
class Corpus:
    fingerprint: str
    description: str
    _documents: Callable[[str], Iterable[str]]

    def documents(self, split: str) -> Iterator[str]:
        """A fresh iterator over the non-empty documents of `split` (train or validation)."""
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; expected one of {SPLITS}")
        for index, doc in enumerate(self._documents(split)):
            if not isinstance(doc, str):
                raise InputError(
                    f"{self.description}: document {index} of the {split} split is {type(doc).__name__}, not text "
                    "(data.text_column must hold a string in every row)"
                )
            doc = doc.strip()
            if doc:
                yield doc


def build_corpus(cfg: DataConfig, hf_cache_dir: Path) -> Corpus:
    builders = {"synthetic": _synthetic_corpus, "files": _files_corpus, "hub": _hub_corpus}
    return builders[cfg.source](cfg, hf_cache_dir)


def _synthetic_corpus(cfg: DataConfig, hf_cache_dir: Path) -> Corpus:
    w = cfg.world
    world: list[World] = []

    def documents(split: str) -> Iterator[str]:
        if not world:
            world.append(World(w.seed, n_people=w.people, n_places=w.places, n_orgs=w.organisations))
        count = w.train_documents if split == "train" else w.validation_documents
        # Validation documents come from a disjoint index range of the same world.
        offset = 0 if split == "train" else w.train_documents
        for i in islice(range(count), cfg.max_documents):
            yield world[0].document(offset + i).text

    fp = fingerprint("synthetic", GENERATOR_VERSION, asdict(w), cfg.max_documents)
    return Corpus(fp, f"synthetic world (seed {w.seed}, {w.train_documents} documents)", documents)


def _files_corpus(cfg: DataConfig, hf_cache_dir: Path) -> Corpus:
    paths = file_sets.expand(cfg.files)
    builder = file_sets.one_format(paths)
    if builder != "parquet":
        for path in paths:
            # A .txt line is read whole (a document, or part of one); a JSON line is one record however long.
            inspect_text_file(path, "data.files", MAX_LINE_BYTES if builder == "text" else None)

    def records(files: list[Path]) -> Iterator:
        # Streamed straight from the files: `datasets`' own cache of a local file is keyed by its modification time,
        # so a file edited with its mtime kept would be read as its old text under its new fingerprint; and
        # building that cache per file made a corpus of 1,000 small files cost minutes before step 0.
        import datasets

        ds = datasets.load_dataset(builder, data_files=[str(p) for p in files], split="train", streaming=True)
        where = f"data.files {[str(p) for p in files][:5]}"
        try:
            for index, row in enumerate(ds):
                if cfg.text_column not in row:
                    _require_column(list(row), cfg.text_column, where)
                value = row[cfg.text_column]
                if not isinstance(value, str):
                    raise InputError(
                        f"data.files: {_row_place(files, index)} holds {type(value).__name__} in column "
                        f"{cfg.text_column!r}, not text (data.text_column must hold a string in every row)"
                    )
                yield value
        except InputError:
            raise
        except (datasets.exceptions.DatasetGenerationError, ValueError, OSError) as err:
            cause = err.__cause__ or err
            raise InputError(f"{where} could not be read as {builder}: {type(cause).__name__}: {cause}") from err

    def documents(split: str) -> Iterator[str]:
        # Lines are grouped into documents file by file: the end of a file ends its last document.
        docs = (
            (doc for path in paths for doc in _group(text_lines(path), cfg.documents))
            if builder == "text"
            else records(paths)
        )
        yield from _stride_split(docs, split, cfg)

    digests = [file_digest(p) for p in paths]
    fp = fingerprint(
        "files",
        _TEXT_READER_VERSION,
        digests,
        builder,
        cfg.documents,
        cfg.text_column,
        cfg.validation_fraction,
        cfg.max_documents,
    )
    shown = [p.name for p in paths[:5]] + ([f"... ({len(paths)} files)"] if len(paths) > 5 else [])
    return Corpus(fp, f"local files {shown}", documents)


def _row_place(files: list[Path], index: int) -> str:
    """Where row `index` (from 0) of `files` read in order is: file and line for JSON-lines files, else the row."""
    seen = 0
    for path in files:
        inner = path.with_suffix("") if file_sets.compression(path) else path
        if inner.suffix.lower() != ".jsonl":  # a .json file may be one array: its rows are not its lines
            break
        for number, _ in checked_lines(path, "data.files"):
            if seen == index:
                return f"{path} line {number}"
            seen += 1
    return f"row {index + 1} of {[str(p) for p in files][:5]}"


def _hub_corpus(cfg: DataConfig, hf_cache_dir: Path) -> Corpus:
    import datasets

    h = cfg.hub
    local = Path(h.path).expanduser()
    saved = local.is_dir() and any((local / f).exists() for f in ("dataset_dict.json", "dataset_info.json"))
    try:
        if saved:
            loaded = datasets.load_from_disk(str(local))
        else:
            loaded = datasets.load_dataset(
                h.path,
                h.name,
                revision=h.revision,
                data_dir=h.data_dir,
                streaming=h.streaming,
                cache_dir=str(hf_cache_dir),
            )
    except FileNotFoundError as err:
        raise MissingInputFile(f"data.hub.path={h.path!r} (name={h.name!r}) could not be loaded: {err}") from err
    except ConnectionError as err:
        raise ConnectionError(
            f"data.hub.path={h.path!r} could not be downloaded (no network?). Pre-download it, or save it with "
            f"`save_to_disk` and pass that directory as data.hub.path. Cause: {err}"
        ) from err
    if h.train_split not in loaded:
        raise InputError(f"data.hub.train_split={h.train_split!r} not in {h.path}; splits: {list(loaded)}")
    if h.validation_split is not None and h.validation_split not in loaded:
        raise InputError(
            f"data.hub.validation_split={h.validation_split!r} not in {h.path}; splits: {list(loaded)} "
            "(set it to null to hold out part of the training split)"
        )
    _require_column(loaded[h.train_split].column_names, cfg.text_column, f"data.hub.path={h.path}")

    def documents(split: str) -> Iterator[str]:
        if h.validation_split is None:
            yield from _stride_split(_rows_as_documents(loaded[h.train_split], cfg), split, cfg)
            return
        name = h.train_split if split == "train" else h.validation_split
        yield from islice(_rows_as_documents(loaded[name], cfg), cfg.max_documents)

    identity = [getattr(loaded[s], "_fingerprint", None) for s in loaded] if not h.streaming else []
    source = {k: v for k, v in asdict(h).items() if not (k == "data_dir" and v is None)}  # as before data_dir
    fp = fingerprint(
        "hub", source, identity, cfg.documents, cfg.text_column, cfg.validation_fraction, cfg.max_documents
    )
    return Corpus(fp, f"dataset {h.path}" + (f" ({h.name})" if h.name else ""), documents)


def _rows_as_documents(ds, cfg: DataConfig) -> Iterator[str]:
    """A dataset's rows are its documents, except for `wikitext`, whose rows are lines of articles."""
    texts = _column(ds, cfg.text_column)
    return _group(texts, "wikitext") if cfg.documents == "wikitext" else texts


def _column(ds, column: str) -> Iterator:
    """The values of one column, read a batch of rows at a time (row by row, `datasets` formats every row)."""
    for batch in ds.iter(batch_size=1024):
        yield from batch[column]


def _require_column(columns: list[str] | None, column: str, where: str) -> None:
    if columns is not None and column not in columns:
        raise InputError(f"{where} has no column {column!r} (data.text_column); columns: {columns}")


def _group(lines: Iterable[str], mode: str) -> Iterator[str]:
    """Text lines as documents: each non-blank line (`line`), each run of non-blank lines between blank or
    whitespace-only ones (`paragraph`), or each WikiText article, from one ` = Title = ` line to the next
    (`wikitext`)."""
    if mode == "line":
        yield from lines
        return
    if mode == "paragraph":
        paragraph: list[str] = []
        for line in lines:
            if line.strip():
                paragraph.append(line.rstrip("\r\n"))
            elif paragraph:
                yield "\n".join(paragraph)
                paragraph = []
        if paragraph:
            yield "\n".join(paragraph)
        return
    article: list[str] = []
    for line in lines:
        if _WIKITEXT_TITLE.match(line.rstrip("\r\n")) and any(s.strip() for s in article):
            yield "".join(article)
            article = []
        article.append(line if line.endswith("\n") else line + "\n")
    if any(s.strip() for s in article):
        yield "".join(article)


def _stride_split(docs: Iterable[str], split: str, cfg: DataConfig) -> Iterator[str]:
    """Hold out every k-th non-empty document for validation, k = round(1 / validation_fraction)."""
    stride = max(2, round(1 / cfg.validation_fraction))
    non_empty = (doc for doc in docs if not isinstance(doc, str) or doc.strip())  # non-text is refused later
    for index, doc in enumerate(islice(non_empty, cfg.max_documents)):
        if (index % stride == stride - 1) == (split == "validation"):
            yield doc
