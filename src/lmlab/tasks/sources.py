"""Where downstream examples come from: the synthetic world, local files, or Hugging Face datasets. The source is
generic; the family (`TaskFamily.from_synthetic`, `read_file`, `from_hub`) turns what it yields into examples."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmlab.data.synthetic import World
from lmlab.errors import InputError
from lmlab.tasks import family_class

# Downstream documents start far beyond any pretraining corpus of the same world, so fine-tuning text is unseen.
SYNTHETIC_OFFSET = 10_000_000


def load_examples(cfg: Any, split: str) -> list:
    """The examples of `split` (train or validation) for the task config `cfg` (a family's Config)."""
    family = family_class(cfg.family)
    if cfg.source == "synthetic":
        examples = family.from_synthetic(cfg, synthetic_documents(cfg, split))
    elif cfg.source == "files":
        examples = family.read_file(cfg, Path(cfg.train_file if split == "train" else cfg.validation_file).expanduser())
    else:
        examples = family.from_hub(cfg, hub_split(cfg, split, family.hub_columns(cfg)))
    if split == "train" and cfg.max_train_examples is not None:
        examples = examples[: cfg.max_train_examples]
    return examples


def synthetic_documents(cfg: Any, split: str) -> list:
    w = cfg.world
    world = World(w.seed, n_people=w.people, n_places=w.places, n_orgs=w.organisations)
    start = SYNTHETIC_OFFSET + (0 if split == "train" else cfg.train_examples)
    count = cfg.train_examples if split == "train" else cfg.validation_examples
    texts = {"document": world.document, "snippet": world.snippet, "mention": world.mention}
    return [texts[cfg.synthetic_text](i) for i in range(start, start + count)]


def hub_split(cfg: Any, split: str, columns: list[str]) -> Any:
    """One split of a hub dataset by name (datasets.load_dataset) or of a save_to_disk directory, holding
    `columns` (their first component)."""
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
    for column in columns:
        if column.split(".")[0] not in data.column_names:
            raise InputError(f"task column {column!r} is not in {cfg.hub_path} (columns: {data.column_names})")
    return data


def nested(row: dict, column: str) -> str:
    """row["translation"]["de"] for column "translation.de"."""
    value: Any = row
    for key in column.split("."):
        value = value[key]
    return str(value)


def label_names(feature: Any) -> Callable[[Any], str]:
    """A function from a stored label to its name: ClassLabel ids map to their names, anything else to str."""
    if hasattr(feature, "int2str"):
        return lambda value: feature.int2str(int(value))
    return str
