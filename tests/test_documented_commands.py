"""Every documented entry-point command composes and passes lmlab's composition checks, so documentation cannot
drift from the configs: the `python {train,finetune,evaluate,generate,study,metalearn}.py ...` lines of README.md's and
experiments/README.md's command blocks, of the entry points' --help texts and of the comments in conf/.

A sweep (`-m a=1,2`) is checked at its first point; placeholders (<run>, /path/corpus.txt, train.tsv, ...) stand for
files that exist; a command for a GPU is refused, naming the missing GPU, on a machine without one. Each
documented command also runs at toy size in tests/test_documented_{commands,examples}_run.py (slow); this is the quick
check."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser

from lmlab.errors import InputError

from .conftest import CONF, ROOT, compose_checked, entry_points
from .doc_commands import PROJECT_DOCUMENTS, documented_blocks

ENTRY_POINT_SCRIPTS = (
    *("train.py", "finetune.py", "evaluate.py", "generate.py", "study.py", "metalearn.py", "rl.py", "export.py"),
)
_SCRIPTS = "|".join(script.removesuffix(".py") for script in ENTRY_POINT_SCRIPTS)
_COMMAND = re.compile(rf"(?:^|#\s*|\s)python ((?:{_SCRIPTS})\.py(?: .*)?)$")
# Files the documented commands name, and the paths that stand in for them.
_FILES = (
    *("train.tsv", "dev.tsv", "train.conll", "dev.conll", "train.json", "dev.json", "train.jsonl", "dev.jsonl"),
    "pairs.jsonl",
)


def documented_commands() -> list[tuple[str, list[str]]]:
    """(where, argv after the shell's parsing) for every documented entry-point command: the Markdown command blocks
    (tests/doc_commands.py) and the comments and --help texts of conf/."""
    found = []
    for block in documented_blocks():
        for command in block:
            words = command.argv(re.sub(r"<[^>]+>", "outputs/some-run", command.text))
            if words[0] == "python" and words[1] in ENTRY_POINT_SCRIPTS:
                found.append((command.where, words[1:]))
    for path in sorted(CONF.rglob("*.yaml")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            match = _COMMAND.search(line.strip())
            if match:
                command = re.sub(r"<[^>]+>", "outputs/some-run", match.group(1).split(" # ")[0].split("  #")[0])
                found.append((f"{path.relative_to(ROOT)}:{number}", shlex.split(command)))
    return found


def _first_point(overrides: list[str]) -> list[str]:
    """The overrides of a sweep's first job."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    first = []
    for raw, override in zip(overrides, parsed, strict=True):
        if override.is_sweep_override():
            value = next(iter(override.sweep_string_iterator()))
            first.append(f"{override.get_key_element()}={value}")
        else:
            first.append(raw)
    return first


def _with_stand_ins(words: list[str], files: Path) -> list[str]:
    out = []
    for word in words:
        word = re.sub(r"=\.\.\.$", "=outputs/some-run", word)
        word = re.sub(r"(/path/[\w./-]+|\.\./shared/[\w./-]+|held_out\.txt)", lambda m: _stand_in(m[0], files), word)
        out.append(word)
    return out


def _stand_in(path: str, files: Path) -> str:
    """A small text file standing in for `path`, one per distinct path (data.files refuses a file named twice)."""
    stand_in = files / re.sub(r"[^\w.-]", "_", path)
    if not stand_in.exists():
        shutil.copyfile(files / "corpus.txt", stand_in)
    return str(stand_in)


@pytest.fixture(scope="module")
def stand_in_files(tmp_path_factory) -> Path:
    files = tmp_path_factory.mktemp("documented")
    (files / "corpus.txt").write_text("A paragraph of text.\n\nAnother one.\n")
    for name in _FILES:
        (files / name).write_text("text\tlabel\na\tb\n")
    return files


COMMANDS = documented_commands()


def test_every_reference_document_is_read_by_the_documentation_tests():
    listed = {path.relative_to(ROOT).as_posix() for path in PROJECT_DOCUMENTS}
    present = {path.relative_to(ROOT).as_posix() for path in (ROOT / "docs").glob("*.md")}
    assert present <= listed, f"add {sorted(present - listed)} to tests/doc_commands.py PROJECT_DOCUMENTS"


def test_the_readme_is_a_front_door():
    """At most 200 lines; the purpose, the two commands and the study workflow on its first screen (60 lines)."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    first_screen = "\n".join(lines[:60])
    for needed in (
        "make train",
        "make test-all",
        "What it is for",
        "python train.py",
        "python finetune.py",
        "python study.py",
    ):
        assert needed in first_screen, needed


def test_the_documentation_has_commands_for_every_entry_point():
    scripts = {words[0] for _, words in COMMANDS}
    assert scripts == set(entry_points()), scripts
    assert len(COMMANDS) >= 30


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[where for where, _ in COMMANDS])
def test_a_documented_command_composes_and_passes_the_checks(where, argv, stand_in_files, project, monkeypatch):
    monkeypatch.chdir(stand_in_files)  # relative file names (train.tsv) are found here
    script, *words = argv
    words = [w for w in _with_stand_ins(words, stand_in_files) if w not in ("-m", "--multirun")]
    if words == ["--help"]:
        words = []
    gpu = any(w in ("trainer=gpu", "trainer.accelerator=gpu") for w in words)
    if gpu and not torch.cuda.is_available():
        with pytest.raises(InputError, match="this machine has no CUDA GPU"):
            compose_checked(script, _first_point(words))
        return
    compose_checked(script, _first_point(words))
