"""The shell commands the documentation gives: README.md's and docs/*.md's ```bash blocks and
experiments/README.md's indented blocks, one command per line (a trailing `\\` continues it), comment lines and
trailing comments removed."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from .conftest import ROOT

# The project's documents in reading order (their commands run in this order, in one toy project): the README,
# then the reference it links to. tests/test_documented_commands.py checks that every docs/*.md is listed.
PROJECT_DOCUMENTS = tuple(
    ROOT / name
    for name in (
        "README.md",
        "docs/stages.md",
        "docs/huggingface.md",
        "docs/studies.md",
        "docs/configs.md",
        "docs/data-and-caches.md",
        "docs/failures.md",
        "docs/cluster-and-resume.md",
        "docs/design.md",
    )
)
EXPERIMENTS_README = ROOT / "experiments" / "README.md"
DOCUMENTS = (*PROJECT_DOCUMENTS, EXPERIMENTS_README)


@dataclass(frozen=True)
class DocCommand:
    where: str  # file:line of the command's first line
    text: str  # as written, continuation lines joined

    def argv(self, text: str | None = None) -> list[str]:
        """The words the shell passes (of `text`, the command after placeholder substitution, if given)."""
        return shlex.split(self.text if text is None else text, comments=True)


def command_blocks(path: Path) -> list[list[DocCommand]]:
    """The ```bash blocks of a Markdown file (and, in experiments/README.md, its indented blocks), each as its
    commands in order. Elsewhere an indented block is output shown, not commands."""
    commands_indented = path == EXPERIMENTS_README
    blocks: list[list[DocCommand]] = []
    lines = path.read_text().splitlines()
    fenced = False
    previous_blank = True
    block: list[tuple[int, str]] | None = None
    for number, line in enumerate(lines, start=1):
        if line.startswith("```"):
            fenced = not fenced and line.strip() == "```bash"
            block = [] if fenced else _close(blocks, block, path)
            continue
        indented = commands_indented and not fenced and line.startswith("    ")
        indented = indented and (block is not None or previous_blank)
        if fenced or indented:
            block = [] if block is None else block
            block.append((number, line))
        elif block is not None and not fenced and line.strip():
            block = _close(blocks, block, path)
        previous_blank = not line.strip()
    _close(blocks, block, path)
    return blocks


def _close(blocks: list[list[DocCommand]], block: list[tuple[int, str]] | None, path: Path) -> None:
    if block:
        commands = _commands(block, path)
        if commands:
            blocks.append(commands)


def _commands(block: list[tuple[int, str]], path: Path) -> list[DocCommand]:
    commands = []
    pending: tuple[int, str] | None = None
    for number, line in block:
        start, text = pending if pending else (number, "")
        text += line.strip()
        if text.endswith("\\"):
            pending = (start, text[:-1] + " ")
            continue
        pending = None
        command = DocCommand(f"{path.relative_to(ROOT)}:{start}", text)
        if _words(text):
            commands.append(command)
    return commands


def _words(text: str) -> list[str]:
    """The words outside a comment; a placeholder (`<MLflow run id>`) counts as one."""
    return shlex.split(re.sub(r"<[^>]*>", "X", text), comments=True)


def documented_blocks() -> list[list[DocCommand]]:
    return [block for path in DOCUMENTS for block in command_blocks(path)]
