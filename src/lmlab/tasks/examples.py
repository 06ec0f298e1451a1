"""Plain downstream examples, whatever their source (synthetic world, local files, hub datasets)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TextExample:
    """Sequence classification: one text or a text pair, and its label."""

    text: str
    label: str
    text_pair: str | None = None


@dataclass
class TaggedExample:
    """Token classification: words and one BIO tag per word."""

    tokens: list[str]
    tags: list[str]


@dataclass
class QAExample:
    """Extractive QA: a question, its context, and the gold answers with their character offsets in the context
    (training uses the first)."""

    question: str
    context: str
    answers: list[str]
    answer_starts: list[int]


@dataclass
class PairExample:
    """Sequence to sequence: a source text and its target (a summary, a translation)."""

    source: str
    target: str
