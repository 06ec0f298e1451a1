"""An objective study, end to end: the budget per objective, the pretraining runs, the fine-tuning runs of every
pretrained run and of the scratch baseline on every task and seed, and the report. One MLflow run (the study's)
is the parent of every stage run; rerunning the study reuses every run that finished."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from lmlab.config_schema import parse
from lmlab.errors import InputError
from lmlab.pretraining.budget import flops_per_step
from lmlab.pretraining.config import TrainConfig
from lmlab.runs.console import closing_summary
from lmlab.runs.run_record import track_run
from lmlab.runs.stage_config import start_stage
from lmlab.studies.config import SCRATCH, StudyConfig, StudySettings, hydra_value
from lmlab.studies.launch import run_stage
from lmlab.studies.plan import finetuning_calls, pretraining_calls, pretraining_overrides
from lmlab.studies.report import write_report
from lmlab.tracking.identity import redacted
from lmlab.tracking.mlflow_run import RUN_FILE

log = logging.getLogger(__name__)

# The study's own overrides that its stages take too (they shape the pretraining runs and the scratch baseline).
_FORWARDED = ("model", "data")


def refuse_optimiser_overrides(task_overrides: list[str]) -> None:
    """An optimiser setting at the study's top level would change no stage: each has its own."""
    for override in task_overrides:
        if override.lstrip("+~").split("=")[0].split(".")[0] == "optim":
            raise InputError(
                f"{override}: a study's stages have their own optimiser settings; put it in study.pretrain or "
                "study.finetune (e.g. study.pretrain=['optim.lr=1e-3'])"
            )


def forwarded_overrides(cfg: DictConfig, choices: dict[str, Any]) -> list[str]:
    """The study's model and data exactly as composed (the option chosen, by a preset or the command line, and every
    value), as overrides for its pretraining runs and scratch baseline."""
    overrides = []
    for group in _FORWARDED:
        overrides.append(f"{group}={choices[group]}")
        overrides += [
            f"{key}={hydra_value(value)}"
            for key, value in _leaves(OmegaConf.to_container(cfg[group], resolve=True), group)
        ]
    return overrides


def _leaves(node: Any, prefix: str) -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [leaf for key, value in node.items() for leaf in _leaves(value, f"{prefix}.{key}")]
    return [(prefix, node)]


def launcher_overrides(hydra_overrides: list[str]) -> list[str]:
    """The study command's launcher choice and settings, which every stage call uses."""
    return [o for o in hydra_overrides if o.startswith(("hydra/launcher=", "hydra.launcher."))]


def steps_per_objective(settings: StudySettings, forwarded: list[str]) -> tuple[dict[str, int], dict[str, int], str]:
    """Optimiser steps per pretrained objective under the budget, FLOPs per step, and the budget as a sentence."""
    objectives = [o for o in settings.objectives if o != SCRATCH]
    flops = {o: flops_per_step(_train_config(o, settings, forwarded)) for o in objectives}
    if settings.budget == "tokens":
        steps = dict.fromkeys(objectives, settings.steps)
        statement = (
            f"Equal tokens: every objective trains {settings.steps:,} optimiser steps on the same batches; training "
            "FLOPs differ (" + ", ".join(f"{o} {steps[o] * flops[o] / 1e12:.4g} TFLOP" for o in objectives) + ")."
        )
    else:
        budget = settings.steps * flops[settings.reference]
        steps = {o: max(1, round(budget / flops[o])) for o in objectives}
        statement = (
            f"Equal training FLOPs: {budget / 1e12:.4g} TFLOP each ({settings.steps:,} steps of "
            f"{settings.reference}); steps: " + ", ".join(f"{o} {steps[o]:,}" for o in objectives) + "."
        )
    return steps, flops, statement


def _train_config(objective: str, settings: StudySettings, forwarded: list[str]) -> TrainConfig:
    """The pretraining config a study job of `objective` composes (the study runs inside its Hydra app)."""
    overrides = [*pretraining_overrides(forwarded), f"objective={objective}", *settings.pretrain]
    cfg = compose("config", overrides=overrides)
    return parse(cfg, TrainConfig)


def study(cfg: DictConfig, run_dir: Path) -> Path:
    """Run the study configured in `cfg` in `run_dir`; returns its report."""
    conf: StudyConfig = start_stage(cfg, StudyConfig)
    settings = conf.study
    tasks = settings.task_list()
    hc = HydraConfig.get()
    refuse_optimiser_overrides(list(hc.overrides.task))
    forwarded = forwarded_overrides(cfg, dict(hc.runtime.choices))
    launcher = launcher_overrides(list(hc.overrides.hydra))
    parallel = hc.runtime.choices.get("hydra/launcher", "basic") != "basic"
    root = Path(conf.paths.root)
    scripts = Path(sys.argv[0]).resolve().parent  # train.py and finetune.py sit beside study.py
    steps, flops, statement = steps_per_objective(settings, forwarded)
    log.info("Study %s: %s", settings.name, statement)

    resolved: dict[str, Any] = redacted(OmegaConf.to_container(cfg, resolve=True))
    tags = {
        "lmlab.kind": "study",
        "lmlab.study": settings.name,
        "lmlab.study_budget": statement,
        "lmlab.study_objectives": ",".join(settings.objectives),
        "lmlab.study_tasks": ",".join(t.name for t in tasks),
        **{f"lmlab.flops_per_step.{o}": str(f) for o, f in flops.items()},
    }
    resume = tags if (run_dir / RUN_FILE).is_file() else None
    tracked = track_run(
        conf.logger,
        root=root,
        run_dir=run_dir,
        run_name=f"study-{settings.name}",
        tags=tags,
        resolved=resolved,
        resume_tags=resume,
    )
    tracking = [f"logger.parent_run_id={tracked.run_id}"] if tracked else []
    client = MlflowClient(tracked.tracking_uri) if tracked else None
    logs = run_dir / "logs"
    try:
        run_stage(
            pretraining_calls(settings, run_dir, steps, forwarded, tracking, conf.seed),
            scripts,
            root,
            launcher,
            parallel,
            logs,
            client,
        )
        run_stage(
            finetuning_calls(settings, run_dir, forwarded, tracking), scripts, root, launcher, parallel, logs, client
        )
    except Exception as err:
        if tracked:
            tracked.fail(str(err))
        raise
    if tracked is None or client is None:
        log.info("Study %s finished; its report needs MLflow (logger=mlflow)", settings.name)
        return run_dir
    report = write_report(client, tracked.run_id, root / "experiments" / "studies" / settings.name)
    tracked.client.log_artifacts(tracked.run_id, str(report.parent), "report")
    tracked.finish()
    log.info("%s\n  report:     %s", closing_summary(run_dir, {}, tracked, root), report)
    return report
