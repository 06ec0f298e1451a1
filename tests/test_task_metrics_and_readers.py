"""Entity-level F1 on crafted BIO sequences, local-file readers (including malformed rows), synthetic tagging."""

from __future__ import annotations

import pytest
import torch

from lmlab.tasks.classification import read_classification
from lmlab.tasks.entities import EntityF1, bio_spans
from lmlab.tasks.token_classification import read_conll, read_tagged_jsonl, tagged_words


def test_bio_spans_follow_conlleval():
    assert bio_spans(["B-PER", "I-PER", "O", "B-LOC"]) == {(0, 2, "PER"), (3, 4, "LOC")}
    assert bio_spans(["I-ORG", "I-ORG", "B-ORG"]) == {(0, 2, "ORG"), (2, 3, "ORG")}  # I- after O starts one
    assert bio_spans(["B-PER", "I-LOC"]) == {(0, 1, "PER"), (1, 2, "LOC")}  # a type change starts a new entity
    assert bio_spans(["O", "O"]) == set()


def test_entity_f1_counts_exact_span_and_type_only():
    metric = EntityF1()
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "O"]]  # PER span cut short: wrong; LOC, ORG right
    metric.update(pred, gold)
    out = metric.compute()
    assert out["precision"] == pytest.approx(2 / 3) and out["recall"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(2 / 3)
    metric.reset()
    metric.update([["B-PER", "I-PER"]], [["B-LOC", "I-LOC"]])  # right span, wrong type
    assert metric.compute()["f1"] == 0
    metric.reset()
    metric.update([["O"]], [["O"]])
    assert metric.compute()["f1"] == torch.tensor(0.0)


def test_classification_reader_reads_tsv_csv_jsonl_and_pairs(tmp_path):
    (tmp_path / "a.tsv").write_text("text\tlabel\ngood film\tpos\nbad film\tneg\n")
    (tmp_path / "b.csv").write_text('sentence1,sentence2,label\n"a, b",c,yes\n')
    (tmp_path / "c.jsonl").write_text('{"text": "x", "label": 1}\n\n{"text": "y", "label": 0}\n')
    assert [(e.text, e.label) for e in read_classification(tmp_path / "a.tsv", "text", "label", None)] == [
        ("good film", "pos"),
        ("bad film", "neg"),
    ]
    [pair] = read_classification(tmp_path / "b.csv", "sentence1", "label", "sentence2")
    assert (pair.text, pair.text_pair, pair.label) == ("a, b", "c", "yes")
    assert [e.label for e in read_classification(tmp_path / "c.jsonl", "text", "label", None)] == ["1", "0"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.tsv", "text\tlabel\ngood\tpos\nmissing label\n", r"bad.tsv:3: expected 2 columns"),
        ("bad.tsv", "text\tlabel\ngood\t\n", r"bad.tsv:2: missing or empty column 'label'"),
        ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": \n', r"bad.jsonl:2: not valid JSON"),
        ("bad.jsonl", '{"txt": "a", "label": 1}\n', r"bad.jsonl:1: missing or empty column 'text'"),
        ("bad.xml", "<a/>", "unsupported format"),
    ],
)
def test_malformed_classification_rows_name_file_and_line(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=message):
        read_classification(tmp_path / name, "text", "label", None)


def test_conll_reader_splits_sentences_and_skips_docstart(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text(
        "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\n\n"
        "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n"
    )
    first, second = read_conll(path, 0, -1)
    assert first.tokens == ["EU", "rejects", "German"] and first.tags == ["B-ORG", "O", "B-MISC"]
    assert second.tokens == ["Peter", "Blackburn"] and second.tags == ["B-PER", "I-PER"]


@pytest.mark.parametrize(
    "content, message",
    [("EU B-ORG\nrejects\n", r"train.conll:2: expected at least 2 columns"), ("EU ORG\n", r":1: tag 'ORG' is not BIO")],
)
def test_malformed_conll_lines_name_file_and_line(tmp_path, content, message):
    (tmp_path / "train.conll").write_text(content)
    with pytest.raises(ValueError, match=message):
        read_conll(tmp_path / "train.conll", 0, -1)


def test_tagged_jsonl_needs_equal_lengths(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"tokens": ["a", "b"], "tags": ["O", "B-X"]}\n{"tokens": ["a"], "tags": []}\n')
    with pytest.raises(ValueError, match=r"t.jsonl:2: 'tokens' and 'tags' must be lists of equal length"):
        read_tagged_jsonl(path, "tokens", "tags")


def test_synthetic_tagging_marks_entity_words_in_bio():
    text = "Helena Varno lives in Wenvar."
    example = tagged_words(text, [(0, 12, "PER"), (22, 28, "LOC")])
    assert example.tokens == ["Helena", "Varno", "lives", "in", "Wenvar", "."]
    assert example.tags == ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]
