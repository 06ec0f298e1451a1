"""Document sources: local files in each format, saved and local datasets, WikiText grouping, errors."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from lmlab.data.config import DataConfig, HubConfig
from lmlab.data.corpus import build_corpus
from lmlab.errors import InputError


def _files_cfg(*paths: Path, **kw) -> DataConfig:
    return DataConfig(source="files", files=[str(p) for p in paths], validation_fraction=0.25, **kw)


def test_txt_paragraphs_and_lines(tmp_path):
    text = tmp_path / "a.txt"
    text.write_text("first doc line one\nline two\n\nsecond doc\n\n\nthird\n\nfourth\n")
    by_para = build_corpus(_files_cfg(text), tmp_path / "hf")
    train, val = list(by_para.documents("train")), list(by_para.documents("validation"))
    assert val == ["fourth"]  # every 4th document is held out
    assert train == ["first doc line one\nline two", "second doc", "third"]
    by_line = build_corpus(_files_cfg(text, documents="line"), tmp_path / "hf")
    assert list(by_line.documents("train")) + list(by_line.documents("validation")) != []
    assert "line two" in list(by_line.documents("train")) + list(by_line.documents("validation"))


def test_jsonl_and_parquet_with_text_column(tmp_path):
    rows = [{"body": f"document number {i}", "id": i} for i in range(8)]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    parquet = tmp_path / "d.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(parquet))
    for path in (jsonl, parquet):
        corpus = build_corpus(_files_cfg(path, text_column="body"), tmp_path / "hf")
        docs = list(corpus.documents("train")) + list(corpus.documents("validation"))
        assert sorted(docs) == sorted(r["body"] for r in rows)


def test_missing_file_names_the_file(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        build_corpus(_files_cfg(missing), tmp_path / "hf")


def test_wrong_column_and_mixed_formats_are_refused(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"body": "x"}\n')
    with pytest.raises(ValueError, match="no column 'text'"):
        list(build_corpus(_files_cfg(jsonl), tmp_path / "hf").documents("train"))
    txt = tmp_path / "t.txt"
    txt.write_text("x\n")
    with pytest.raises(ValueError, match="one format per run"):
        build_corpus(_files_cfg(jsonl, txt), tmp_path / "hf")


def test_fingerprint_follows_file_content(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("one\n\ntwo\n")
    before = build_corpus(_files_cfg(path), tmp_path / "hf").fingerprint
    assert build_corpus(_files_cfg(path), tmp_path / "hf").fingerprint == before
    path.write_text("one\n\nthree\n")
    assert build_corpus(_files_cfg(path), tmp_path / "hf").fingerprint != before


WIKITEXT_LINES = [
    "",
    " = Alpha = \n",
    "",
    " Alpha is a letter . \n",
    " = = History = = \n",
    " It is old . \n",
    " = Beta = \n",
    "",
    " Beta follows alpha . \n",
]


def test_saved_hub_dataset_grouped_into_wikitext_articles(tmp_path):
    saved = tmp_path / "saved"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": WIKITEXT_LINES}),
            "validation": datasets.Dataset.from_dict({"text": [" = Gamma = \n", " Gamma is third . \n"]}),
        }
    ).save_to_disk(str(saved))
    cfg = DataConfig(source="hub", documents="wikitext")
    cfg.hub.path = str(saved)
    corpus = build_corpus(cfg, tmp_path / "hf")
    train = list(corpus.documents("train"))
    assert len(train) == 2
    assert train[0].startswith("= Alpha =") and "= = History = =" in train[0]
    assert train[1].startswith("= Beta =")
    assert list(corpus.documents("validation")) == ["= Gamma = \n Gamma is third ."]


def test_local_dataset_directory_through_load_dataset(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "train.jsonl").write_text("\n".join(json.dumps({"text": f"doc {i}"}) for i in range(10)))
    cfg = DataConfig(source="hub", validation_fraction=0.2)
    cfg.hub.path = str(folder)
    cfg.hub.validation_split = None
    corpus = build_corpus(cfg, tmp_path / "hf")
    assert list(corpus.documents("validation")) == ["doc 4", "doc 9"]
    assert len(list(corpus.documents("train"))) == 8


def test_missing_split_is_named(tmp_path):
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a"]})}).save_to_disk(str(saved))
    cfg = DataConfig(source="hub")
    cfg.hub.path = str(saved)
    with pytest.raises(ValueError, match="validation_split='validation' not in"):
        build_corpus(cfg, tmp_path / "hf")


def test_synthetic_splits_are_disjoint_and_deterministic(tmp_path):
    cfg = DataConfig()
    cfg.world.train_documents, cfg.world.validation_documents = 50, 10
    a, b = build_corpus(cfg, tmp_path), build_corpus(cfg, tmp_path)
    train = list(a.documents("train"))
    assert train == list(b.documents("train"))
    assert not set(train) & set(a.documents("validation"))
    cfg.world.seed += 1
    assert build_corpus(cfg, tmp_path).fingerprint != a.fingerprint


@pytest.mark.parametrize(
    ("settings", "why"),
    [
        ({"source": "synthetic"}, "the synthetic world generates whole documents"),
        ({"source": "files", "files": ["RECORDS"]}, "are record files \\(one document per row\\)"),
        ({"source": "hub", "hub": HubConfig(path="some/dataset")}, "a hub dataset's rows are its documents"),
    ],
)
def test_data_documents_where_it_would_be_ignored_is_refused(tmp_path, settings, why):
    records = tmp_path / "docs.jsonl"
    records.write_text('{"text": "one document"}\n')
    if settings.get("files") == ["RECORDS"]:
        settings = {**settings, "files": [str(records)]}
    with pytest.raises(InputError, match=f"data.documents=line would be ignored: .*{why}"):
        DataConfig(documents="line", **settings).validate()
    DataConfig(**settings).validate()  # unset: each source's own unit


def test_wikitext_grouping_applies_to_hub_rows():
    DataConfig(source="hub", hub=HubConfig(path="wikitext"), documents="wikitext").validate()


def _compressed(path: Path, text: str) -> Path:
    import gzip

    import zstandard

    data = text.encode()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    elif path.suffix == ".zst":
        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    else:
        path.write_bytes(data)
    return path


def test_globs_and_compressed_shards_read_as_the_plain_text(tmp_path):
    shards = tmp_path / "shards"
    (shards / "more").mkdir(parents=True)
    texts = [f"shard {i} first paragraph\n\nshard {i} second paragraph\n" for i in range(4)]
    names = ["shard-0.txt.gz", "shard-1.txt.zst", "shard-2.txt", "more/shard-3.txt.gz"]
    for name, text in zip(names, texts, strict=True):
        _compressed(shards / name, text)
    plain = tmp_path / "plain.txt"
    plain.write_text("\n".join(texts))
    cfg = _files_cfg(shards / "shard-*.txt*", shards / "**" / "shard-3.txt.gz")
    cfg.validate()
    expected = build_corpus(_files_cfg(plain), tmp_path / "hf")
    got = build_corpus(cfg, tmp_path / "hf")
    for split in ("train", "validation"):
        assert list(got.documents(split)) == list(expected.documents(split))
    assert "shard-0.txt.gz" in got.description


def test_file_patterns_and_compressed_files_are_checked_before_reading(tmp_path):
    from lmlab.data.file_sets import expand

    with pytest.raises(FileNotFoundError, match=r"the pattern .*shard-\*\.txt matches no file"):
        expand([str(tmp_path / "shard-*.txt")])
    one = _compressed(tmp_path / "a.txt.gz", "text\n")
    with pytest.raises(InputError, match=r"a.txt.gz 2 times \(the same path"):
        expand([str(one), str(tmp_path / "*.gz")])
    broken = tmp_path / "broken.txt.gz"
    broken.write_bytes(one.read_bytes()[:12])
    with pytest.raises(InputError, match="broken.txt.gz could not be decompressed"):
        build_corpus(_files_cfg(broken), tmp_path / "hf")
    packed = tmp_path / "d.parquet.gz"
    packed.write_bytes(b"x")
    with pytest.raises(InputError, match="compressed parquet"):
        build_corpus(_files_cfg(packed), tmp_path / "hf")
    with pytest.raises(InputError, match="one format per run"):
        build_corpus(_files_cfg(one, _compressed(tmp_path / "b.jsonl.zst", '{"text": "x"}\n')), tmp_path / "hf")
