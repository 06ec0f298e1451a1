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
