"""data=wikipedia|bookcorpus|c4|fineweb load through `datasets` streaming, as written, from local copies of their hub
repositories: the same layout (README `configs:`, data directories, file formats) and the same columns, offline."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmlab.config_schema import parse
from lmlab.data.corpus import build_corpus
from lmlab.data.datamodule import PretrainDataModule
from lmlab.pretraining.config import TrainConfig


def _text(corpus: str, split: str, i: int) -> str:
    return f"{corpus} {split} document {i}. It has two sentences about {['ants', 'bees', 'cats'][i % 3]}."


def _readme(*configs: tuple[str, dict[str, str]]) -> str:
    lines = ["---", "configs:"]
    for name, files in configs:
        lines += [f"- config_name: {name}", "  data_files:"]
        lines += [f"  - split: {split}\n    path: {path}" for split, path in files.items()]
    return "\n".join(lines + ["---", ""])


def _parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _wikipedia(repo: Path, n: int) -> None:
    (repo / "README.md").write_text(_readme(("20231101.en", {"train": "20231101.en/train-*"})))
    rows = [
        {"id": str(i), "url": f"https://en.wikipedia.org/wiki?curid={i}", "title": f"T{i}", "text": _text("w", "t", i)}
        for i in range(n)
    ]
    _parquet(repo / "20231101.en" / "train-00000-of-00041.parquet", rows[: n // 2])
    _parquet(repo / "20231101.en" / "train-00001-of-00041.parquet", rows[n // 2 :])


def _bookcorpus(repo: Path, n: int) -> None:
    # the hub's parquet conversion branch: one directory per config, one per split
    _parquet(repo / "plain_text" / "train" / "0000.parquet", [{"text": _text("b", "t", i)} for i in range(n)])


def _c4(repo: Path, n: int) -> None:
    (repo / "README.md").write_text(
        _readme(("en", {"train": "en/c4-train.*.json.gz", "validation": "en/c4-validation.*.json.gz"}))
    )
    (repo / "en").mkdir(parents=True)
    for split, name, count in [("t", "c4-train.00000-of-01024", n), ("v", "c4-validation.00000-of-00008", n // 4)]:
        with gzip.open(repo / "en" / f"{name}.json.gz", "wt") as f:
            for i in range(count):
                f.write(json.dumps({"text": _text("c", split, i), "timestamp": "2019-04-25T12:57:54Z", "url": "u"}))
                f.write("\n")


def _fineweb(repo: Path, n: int) -> None:
    (repo / "README.md").write_text(_readme(("sample-10BT", {"train": "sample/10BT/*"})))
    rows = [
        {
            "text": _text("f", "t", i),
            "id": f"<urn:uuid:{i}>",
            "dump": "CC-MAIN-2013-20",
            "url": "u",
            "date": "2013-05-18T05:48:54Z",
            "file_path": "s3://x",
            "language": "en",
            "language_score": 0.9,
            "token_count": 12,
        }
        for i in range(n)
    ]
    _parquet(repo / "sample" / "10BT" / "000_00000.parquet", rows)


REPOS = {"wikipedia": _wikipedia, "bookcorpus": _bookcorpus, "c4": _c4, "fineweb": _fineweb}
# the validation documents each copy yields: a held-out 1 in 1000 of 3000, or c4's own split
VALIDATION = {"wikipedia": 3, "bookcorpus": 3, "c4": 750, "fineweb": 3}


@pytest.mark.parametrize("name", sorted(REPOS))
def test_a_hub_corpus_config_streams_its_repository_into_the_token_cache(name, tmp_path, compose_config, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    REPOS[name](repo, 3000)
    conf = parse(compose_config(f"data={name}", f"data.hub.path={repo}", "data.tokenizer.vocab_size=300"), TrainConfig)
    assert conf.data.hub.streaming and conf.data.tokenizer.train_documents
    conf.data.tokenizer.train_documents = 500
    loaded = []
    load = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: loaded.append(load(*a, **k)) or loaded[-1])
    corpus = build_corpus(conf.data, tmp_path / "hf")
    assert isinstance(loaded[0], datasets.IterableDatasetDict)  # streamed: nothing was downloaded first
    train = list(corpus.documents("train"))
    validation = list(corpus.documents("validation"))
    assert len(validation) == VALIDATION[name] and len(train) + (0 if name == "c4" else len(validation)) == 3000
    assert train[0] == _text(name[0], "t", 0)
    conf.data.max_tokens, conf.data.tokenize.shard_documents = 2000, 100
    conf.data.batch_size = 2  # the 2,000 tokens make a few blocks of 512; a batch is never more than the split
    data = PretrainDataModule(conf.data, tmp_path / "cache", seed=0)
    data.prepare()
    train_cache = data.splits["train"]
    last = train_cache.stream.shard(train_cache.stream.n_shards - 1).n_tokens
    assert train_cache.n_tokens - last < 2000 <= train_cache.n_tokens  # only the first shards that hold them
