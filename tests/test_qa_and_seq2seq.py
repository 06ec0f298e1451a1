"""Extractive QA and seq2seq units: SQuAD normalisation and scores, ROUGE/BLEU on hand-computed pairs, context
windows, target alignment, readers (with malformed input) and configuration errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lmlab.heads import IGNORE
from lmlab.models import ModelConfig
from lmlab.tasks.examples import PairExample, QAExample
from lmlab.tasks.extractive_qa import NO_OFFSET, ExtractiveQA, ExtractiveQAConfig, read_squad
from lmlab.tasks.readers import DataFileError
from lmlab.tasks.seq2seq import Seq2Seq, Seq2SeqConfig, read_pairs
from lmlab.tasks.sources import load_examples
from lmlab.tasks.squad_metric import SquadScore
from lmlab.tasks.text_metrics import GenerationScore


@pytest.mark.parametrize(
    ("answer", "gold", "em", "f1"),
    [
        ("the Cat.", ["dog", "cat"], 1.0, 1.0),  # normalised (case, punctuation, articles); the best gold answer
        ("cat sat", ["cat"], 0.0, 2 / 3),
        # predicted {cat, sat} vs gold {cat, sat, on, mat}: precision 1, recall 1/2 -> F1 2/3
        ("the cat sat", ["cat sat on mat"], 0.0, 2 / 3),
    ],
)
def test_squad_exact_match_and_f1_of_a_chosen_span(answer, gold, em, f1):
    context = f"{answer} | filler"
    metric = SquadScore([(context, gold)])
    metric.update(torch.tensor([0]), torch.tensor([1.0]), torch.tensor([0]), torch.tensor([len(answer)]))
    out = metric.compute()
    assert out["em"] == pytest.approx(em) and out["f1"] == pytest.approx(f1, abs=1e-4)


def test_squad_score_keeps_each_questions_best_window():
    metric = SquadScore([("Paris is in France.", ["Paris"]), ("Bonn is small.", ["Bonn"])])
    # question 0: window scores 1.0 (wrong span "France") and 5.0 (right span "Paris"); question 1 never answered
    metric.update(torch.tensor([0, 0]), torch.tensor([1.0, 5.0]), torch.tensor([12, 0]), torch.tensor([18, 5]))
    out = metric.compute()
    assert out["em"] == pytest.approx(0.5) and out["f1"] == pytest.approx(0.5)


def test_rouge_and_bleu_on_hand_computed_pairs():
    metric = GenerationScore(["the cat is on the mat"])
    metric.update(torch.tensor([0]), ["the cat sat on the mat"])
    out = metric.compute()
    # unigrams 5/6 shared; bigrams {the cat, on the, the mat} 3/5; longest common subsequence 5 of 6 tokens
    assert out["rouge1"] == pytest.approx(5 / 6, abs=1e-4)
    assert out["rouge2"] == pytest.approx(3 / 5, abs=1e-4)
    assert out["rougeL"] == pytest.approx(5 / 6, abs=1e-4)
    assert out["bleu"] == 0.0  # no 4-gram in common
    metric = GenerationScore(["the cat sat on a mat", "good night to you all"])
    metric.update(torch.tensor([0]), ["the cat sat on the mat"])
    # n-gram precisions 5/6, 3/5, 2/4, 1/3; same length, so no brevity penalty
    assert metric.compute()["bleu"] == pytest.approx((5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, abs=1e-4)
    metric.reset()
    metric.update(torch.tensor([1]), ["good night to you all"])
    assert metric.compute()["bleu"] == pytest.approx(1.0) and metric.compute()["rougeL"] == pytest.approx(1.0)


def _task(**overrides) -> ExtractiveQAConfig:
    return ExtractiveQAConfig(**{"max_length": 32, "max_question_length": 8, "doc_stride": 6, **overrides})


def _seq2seq(**overrides) -> Seq2SeqConfig:
    return Seq2SeqConfig(**{"max_length": 32, **overrides})


def test_long_contexts_are_read_in_windows_that_point_at_the_answer(tokenizer):
    context = " ".join(f"Filler sentence number {i} says nothing." for i in range(6)) + " She lives in Kastor."
    start = context.index("Kastor")
    family = ExtractiveQA(_task(), tokenizer, [], ModelConfig())
    windows = family.windows(QAExample("Where does she live?", context, ["Kastor"], [start]), 7)
    assert len(windows) > 3
    answered = 0
    for w in windows:
        assert w["input_ids"].shape == (32,) and int(w["example_index"]) == 7
        s, e = int(w["start_positions"]), int(w["end_positions"])
        if s == 0:
            assert e == 0  # the answer is not (wholly) in this window: point at [CLS]
            continue
        answered += 1
        assert context[w["offsets"][s, 0] : w["offsets"][e, 1]] == "Kastor"
    assert answered >= 1
    # consecutive windows start doc_stride context tokens apart
    firsts = [int(np.flatnonzero(w["offsets"][:, 0] != NO_OFFSET)[0]) for w in windows]
    starts = [int(w["offsets"][f, 0]) for w, f in zip(windows, firsts, strict=True)]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)


def test_best_span_respects_context_and_max_answer_length(tokenizer):
    family = ExtractiveQA(_task(max_answer_length=2), tokenizer, [], ModelConfig())
    offsets = torch.full((1, 6, 2), NO_OFFSET)
    offsets[0, 2:6] = torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7]])
    logits = torch.zeros(1, 6, 2)
    logits[0, 0] = 100.0  # [CLS] scores best but is not context
    logits[0, 2, 0], logits[0, 5, 1] = 10.0, 10.0  # start 2, end 5: three tokens, longer than allowed
    logits[0, 3, 1] = 2.0
    score, first, last = family.best_spans(logits, offsets)
    assert (int(first), int(last)) == (2, 3) and float(score) == 12.0  # (2, 5) would score 20


def test_seq2seq_labels_are_the_target_after_the_source(tokenizer):
    example = PairExample("Helena Varno won the final.", "Varno wins final")
    target = tokenizer.tokenizer.encode(example.target, add_special_tokens=False).ids
    cfg = _seq2seq(max_target_length=8)
    decoder = Seq2Seq(cfg, tokenizer, [], ModelConfig(layout="decoder")).encode(example)
    n_source = int(decoder["source_length"])
    labelled = decoder["labels"] != IGNORE
    assert list(decoder["labels"][labelled]) == [*target, tokenizer.token_id("[SEP]")]
    assert np.flatnonzero(labelled)[0] == n_source - 1  # the source's closing [SEP] predicts the first target token
    assert list(decoder["input_ids"][n_source : n_source + len(target)]) == target
    enc_dec = Seq2Seq(cfg, tokenizer, [], ModelConfig(layout="encoder_decoder")).encode(example)
    assert enc_dec["decoder_input_ids"].shape == enc_dec["labels"].shape == (8,)
    assert list(enc_dec["decoder_input_ids"][1 : len(target) + 1]) == list(enc_dec["labels"][: len(target)])


def test_seq2seq_needs_a_generative_backbone(tokenizer):
    with pytest.raises(ValueError, match="needs a backbone that writes text.*this one is encoder"):
        Seq2Seq(_seq2seq(), tokenizer, [], ModelConfig(layout="encoder"))
    with pytest.raises(ValueError, match="task.max_length=32 must leave a decoder room"):
        Seq2Seq(_seq2seq(max_target_length=30), tokenizer, [], ModelConfig(layout="decoder"))


def test_doc_stride_beyond_the_context_room_is_refused():
    with pytest.raises(ValueError, match=r"task.doc_stride=30 must be in \[1, 21\]"):
        _task(doc_stride=30).validate()


def _squad(tmp_path, answer_start: int = 0):
    document = {
        "data": [
            {
                "paragraphs": [
                    {
                        "context": "Kastor is a port.",
                        "qas": [
                            {
                                "id": "a",
                                "question": "What is Kastor?",
                                "answers": [{"text": "a port", "answer_start": 10}],
                            },
                            {
                                "id": "b",
                                "question": "Name?",
                                "answers": [{"text": "Kastor", "answer_start": answer_start}],
                            },
                        ],
                    }
                ]
            }
        ]
    }
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(document, indent=1))
    return path


def test_squad_reader_and_its_errors(tmp_path):
    examples = read_squad(_squad(tmp_path))
    assert [(e.question, e.answers, e.answer_starts) for e in examples] == [
        ("What is Kastor?", ["a port"], [10]),
        ("Name?", ["Kastor"], [0]),
    ]
    with pytest.raises(ValueError, match=r"squad.json: data\[0\].paragraphs\[0\].qas\[1\]: answer 'Kastor' is not at"):
        read_squad(_squad(tmp_path, answer_start=3))
    broken = tmp_path / "broken.json"
    broken.write_text('{"data": [\n  {"paragraphs": [}\n]}')
    with pytest.raises(DataFileError, match="broken.json:2: not valid JSON"):
        read_squad(broken)
    (tmp_path / "other.json").write_text('{"rows": []}')
    with pytest.raises(ValueError, match="not SQuAD format"):
        read_squad(tmp_path / "other.json")


def test_pair_reader_reads_jsonl_and_tsv_and_names_bad_rows(tmp_path):
    (tmp_path / "p.tsv").write_text("source\ttarget\nein Haus\ta house\n")
    assert read_pairs(tmp_path / "p.tsv", "source", "target") == [PairExample("ein Haus", "a house")]
    (tmp_path / "p.jsonl").write_text('{"document": "long text", "summary": "short"}\n{"document": "x"}\n')
    with pytest.raises(DataFileError, match=r"p.jsonl:2: missing or empty column 'summary'"):
        read_pairs(tmp_path / "p.jsonl", "document", "summary")


def test_saved_hub_datasets_for_translation_and_squad(tmp_path):
    """The hub code path on save_to_disk datasets: WMT's nested translation column and SQuAD's answers."""
    import datasets

    translation = datasets.Dataset.from_dict({"translation": [{"de": "ein Haus", "en": "a house"}]})
    datasets.DatasetDict({"train": translation, "validation": translation}).save_to_disk(tmp_path / "wmt")
    cfg = _seq2seq(source="hub", hub_path=str(tmp_path / "wmt"))
    cfg.source_column, cfg.target_column = "translation.de", "translation.en"
    assert load_examples(cfg, "train") == [PairExample("ein Haus", "a house")]
    squad = datasets.Dataset.from_dict(
        {
            "question": ["Name?"],
            "context": ["Kastor is a port."],
            "answers": [{"text": ["Kastor"], "answer_start": [0]}],
        }
    )
    datasets.DatasetDict({"train": squad, "validation": squad}).save_to_disk(tmp_path / "squad")
    cfg = _task(source="hub", hub_path=str(tmp_path / "squad"))
    assert load_examples(cfg, "validation") == [QAExample("Name?", "Kastor is a port.", ["Kastor"], [0])]
    cfg.context_column = "passage"
    with pytest.raises(ValueError, match="task column 'passage' is not in"):
        load_examples(cfg, "train")
