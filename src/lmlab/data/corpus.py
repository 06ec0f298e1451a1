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

from lmlab.data.cache import file_digest, fingerprint
from lmlab.data.config import DataConfig
from lmlab.data.synthetic import GENERATOR_VERSION, World

SPLITS = ("train", "validation")
_FILE_FORMATS = {".txt": "text", ".text": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
_WIKITEXT_TITLE = re.compile(r"^ = [^=].* = $")


@dataclass
class Corpus:
    fingerprint: str
    description: str
    _documents: Callable[[str], Iterable[str]]

    def documents(self, split: str) -> Iterator[str]:
        """A fresh iterator over the non-empty documents of `split` (train or validation)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        for doc in self._documents(split):
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
    paths = [Path(f).expanduser().resolve() for f in cfg.files]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"data.files: {path} does not exist or is not a file")
    suffixes = {p.suffix.lower() for p in paths}
    unknown = suffixes - set(_FILE_FORMATS)
    if unknown or len({_FILE_FORMATS[s] for s in suffixes - unknown}) > 1:
        raise ValueError(
            f"data.files must all have one of the formats {sorted(_FILE_FORMATS)} (one format per run); "
            f"got suffixes {sorted(suffixes)}"
        )
    builder = _FILE_FORMATS[paths[0].suffix.lower()]

    def documents(split: str) -> Iterator[str]:
        import datasets

        kwargs = {"sample_by": "line" if cfg.documents == "wikitext" else cfg.documents}
        ds = datasets.load_dataset(
            builder,
            data_files=[str(p) for p in paths],
            split="train",
            cache_dir=str(hf_cache_dir),
            **(kwargs if builder == "text" else {}),
        )
        _require_column(ds.column_names, cfg.text_column, f"data.files {[str(p) for p in paths]}")
        docs = _group(ds[cfg.text_column], cfg.documents)
        yield from _stride_split(docs, split, cfg)

    digests = [file_digest(p) for p in paths]
    fp = fingerprint(
        "files", digests, builder, cfg.documents, cfg.text_column, cfg.validation_fraction, cfg.max_documents
    )
    return Corpus(fp, f"local files {[p.name for p in paths]}", documents)


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
                h.path, h.name, revision=h.revision, streaming=h.streaming, cache_dir=str(hf_cache_dir)
            )
    except FileNotFoundError as err:
        raise FileNotFoundError(f"data.hub.path={h.path!r} (name={h.name!r}) could not be loaded: {err}") from err
    except ConnectionError as err:
        raise ConnectionError(
            f"data.hub.path={h.path!r} could not be downloaded (no network?). Pre-download it, or save it with "
            f"`save_to_disk` and pass that directory as data.hub.path. Cause: {err}"
        ) from err
    if h.train_split not in loaded:
        raise ValueError(f"data.hub.train_split={h.train_split!r} not in {h.path}; splits: {list(loaded)}")
    if h.validation_split is not None and h.validation_split not in loaded:
        raise ValueError(
            f"data.hub.validation_split={h.validation_split!r} not in {h.path}; splits: {list(loaded)} "
            "(set it to null to hold out part of the training split)"
        )
    _require_column(loaded[h.train_split].column_names, cfg.text_column, f"data.hub.path={h.path}")

    def documents(split: str) -> Iterator[str]:
        if h.validation_split is None:
            yield from _stride_split(_group(_column(loaded[h.train_split], cfg.text_column), cfg.documents), split, cfg)
            return
        name = h.train_split if split == "train" else h.validation_split
        yield from islice(_group(_column(loaded[name], cfg.text_column), cfg.documents), cfg.max_documents)

    identity = [getattr(loaded[s], "_fingerprint", None) for s in loaded] if not h.streaming else []
    fp = fingerprint(
        "hub", asdict(h), identity, cfg.documents, cfg.text_column, cfg.validation_fraction, cfg.max_documents
    )
    return Corpus(fp, f"dataset {h.path}" + (f" ({h.name})" if h.name else ""), documents)


def _column(ds, column: str) -> Iterator[str]:
    for row in ds:
        yield row[column]


def _require_column(columns: list[str] | None, column: str, where: str) -> None:
    if columns is not None and column not in columns:
        raise ValueError(f"{where} has no column {column!r} (data.text_column); columns: {columns}")


def _group(lines: Iterable[str], mode: str) -> Iterator[str]:
    """Rows are documents, except for `wikitext`, whose rows are lines grouped into articles by their titles."""
    if mode != "wikitext":
        yield from lines
        return
    article: list[str] = []
    for line in lines:
        if _WIKITEXT_TITLE.match(line.rstrip("\n")) and any(s.strip() for s in article):
            yield "".join(article)
            article = []
        article.append(line if line.endswith("\n") else line + "\n")
    if any(s.strip() for s in article):
        yield "".join(article)


def _stride_split(docs: Iterable[str], split: str, cfg: DataConfig) -> Iterator[str]:
    """Hold out every k-th non-empty document for validation, k = round(1 / validation_fraction)."""
    stride = max(2, round(1 / cfg.validation_fraction))
    non_empty = (doc for doc in docs if doc.strip())
    for index, doc in enumerate(islice(non_empty, cfg.max_documents)):
        if (index % stride == stride - 1) == (split == "validation"):
            yield doc
