"""End to end: every objective config trains on the synthetic world and its validation loss falls; every
layout, position type and the convolutional mixer train with at least one objective."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lmlab.objectives import objective_class
from lmlab.pretraining.run import pretrain

from .conftest import CONF, TINY

# Every objective and backbone knob trained end to end: minutes on 2 cores, so `make test-all` (CI) runs them and the
# everyday `make test` relies on each objective's own unit tests.
pytestmark = pytest.mark.slow

OBJECTIVES = sorted(p.stem for p in (CONF / "objective").glob("*.yaml"))
# Wider than TINY so that encoders leave the unigram plateau within a few hundred steps.
MODEL = ["model.d_model=64", "model.n_heads=4", "model.d_ff=128", "model.init_std=0.125", "optim.lr=3e-3"]


def _train(compose_config, run_dir: Path, *overrides: str) -> list[dict[str, str]]:
    cfg = compose_config(
        *TINY, *MODEL, "trainer.max_steps=300", "trainer.val_check_interval=100", "logger=csv", *overrides
    )
    pretrain(cfg, run_dir)
    with open(next((run_dir / "csv").glob("*/metrics.csv"))) as f:
        return [row for row in csv.DictReader(f) if row.get("val/loss")]


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_objective_yaml_lists_every_setting_of_its_schema(objective):
    """So each setting can be overridden on the command line (objective.x=...) and is recorded with the run."""
    written = OmegaConf.load(CONF / "objective" / f"{objective}.yaml")["objective"]
    assert set(written) == {f.name for f in dataclasses.fields(objective_class(written["name"]).Config)}


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_objective_trains_and_its_validation_loss_falls(objective, compose_config, project):
    rows = _train(compose_config, project / "run", f"objective={objective}")
    losses = [float(r["val/loss"]) for r in rows]
    assert len(losses) == 4 and losses[-1] < 0.8 * losses[0], losses  # step 0 (untrained), 100, 200, 300
    if objective in ("nsp", "sop"):  # the sentence-pair task itself is learnt, not only the MLM part
        assert float(rows[-1][f"val/{objective}_acc"]) > 0.65, rows[-1]
    if objective == "mixture":  # each component's loss is logged under its own name
        assert rows[-1]["val/span_loss"] and rows[-1]["val/denoise_loss"]
    examples = (project / "run" / "examples.txt").read_text()
    assert examples.count("== example") == 3 and "input_ids: " in examples


@pytest.mark.parametrize(
    "objective, knobs",
    [
        ("clm", ["model.mixer=conv", "model.positions=sinusoidal"]),
        ("span", ["model.mixer=conv", "model.positions=learned"]),
        ("span", ["model.positions=relative"]),
        ("mlm", ["model.positions=relative"]),
        ("prefix_lm", ["model.positions=learned", "model.norm_position=post"]),
    ],
)
def test_backbone_knobs_train(objective, knobs, compose_config, project):
    rows = _train(compose_config, project / "run", f"objective={objective}", *knobs)
    losses = [float(r["val/loss"]) for r in rows]
    assert losses[-1] < 0.8 * losses[0], losses
