"""Progress log lines: every `every` steps and at the last, with the train loss and (RL) reward the run logs."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from lmlab.callbacks.progress import ProgressLines


def test_a_line_every_n_steps_and_at_the_last_shows_what_the_run_logs(caplog: pytest.LogCaptureFixture) -> None:
    trainer = SimpleNamespace(
        global_step=0, max_steps=7, callback_metrics={"train/loss": torch.tensor(2.5)}, is_global_zero=True
    )
    progress = ProgressLines(every=3)
    with caplog.at_level(logging.INFO, logger="lmlab.progress"):
        for step in range(1, 8):
            trainer.global_step = step
            if step == 6:
                trainer.callback_metrics["train/reward"] = torch.tensor(0.75)
            progress.on_train_batch_end(trainer)  # type: ignore[arg-type]
            progress.on_train_batch_end(trainer)  # type: ignore[arg-type]  # an accumulating step ends once
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" |")[0] for line in lines] == ["step 3/7", "step 6/7", "step 7/7"]
    assert lines[0].startswith("step 3/7 | train/loss 2.5") and "train/reward" not in lines[0]
    assert lines[1].startswith("step 6/7 | train/loss 2.5 | train/reward 0.75")


def test_ranks_other_than_0_write_no_lines(caplog: pytest.LogCaptureFixture) -> None:
    trainer = SimpleNamespace(global_step=7, max_steps=7, callback_metrics={}, is_global_zero=False)
    with caplog.at_level(logging.INFO, logger="lmlab.progress"):
        ProgressLines(every=1).on_train_batch_end(trainer)  # type: ignore[arg-type]
    assert caplog.records == []
