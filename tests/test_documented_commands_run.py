"""README.md's and docs/*.md's command blocks run as written, in reading order, at toy size, in a toy project of
their own (tests/doc_harness.py says how)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .doc_commands import PROJECT_DOCUMENTS, command_blocks
from .doc_harness import run_block, toy_project

pytestmark = pytest.mark.slow

BLOCKS = [block for path in PROJECT_DOCUMENTS for block in command_blocks(path)]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    root = tmp_path_factory.mktemp("toy_project")
    with toy_project(root) as env:
        yield root, env


@pytest.mark.parametrize("block", BLOCKS, ids=[block[0].where for block in BLOCKS])
def test_a_readme_command_block_runs(block, project):
    run_block(block, *project)
