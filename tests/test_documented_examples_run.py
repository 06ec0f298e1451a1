"""experiments/README.md's command blocks, then the examples each entry point's `--help` prints, run as written at
toy size, in a toy project of their own (tests/doc_harness.py says how). Its first commands are the README's runs
that these commands start from: the two the placeholders (`<run>`, `pretrained=...`, `<clm run>`) stand for, and the
BERT-style run export.py --help exports. README.md's blocks run in another project, so the two files run side by side
on two test workers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ROOT
from .doc_commands import DocCommand, command_blocks
from .doc_harness import execute, help_blocks, run_block, toy_project

pytestmark = pytest.mark.slow

BLOCKS = command_blocks(ROOT / "experiments" / "README.md") + help_blocks()
# The runs a placeholder stands for, and the one export.py --help exports, made as the README makes them.
STARTING_RUNS = (
    "python train.py",
    "python train.py objective=clm",
    "python train.py model=bert_style objective=mlm trainer.max_steps=300",
)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    root = tmp_path_factory.mktemp("toy_project")
    with toy_project(root) as env:
        for command in STARTING_RUNS:
            execute(DocCommand("starting run", command), root, env)
        yield root, env


@pytest.mark.parametrize("block", BLOCKS, ids=[block[0].where for block in BLOCKS])
def test_an_example_command_block_runs(block, project):
    run_block(block, *project)
