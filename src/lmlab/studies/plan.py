"""The runs an objective study consists of, as stage commands: one pretraining job per objective, then one
fine-tuning call per (task, objective or scratch) that sweeps the seeds. Every job has a fixed directory under the
study's output dir, so rerunning the study finds the runs it already made."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lmlab.studies.config import SCRATCH, StudySettings, StudyTask, hydra_value

JOB_FILE = "study_job.json"


@dataclass(frozen=True)
class Job:
    """One run: where it lives and the overrides that define it."""

    directory: Path
    overrides: tuple[str, ...]
    objective: str
    task: str | None = None  # the study's label of the task (fine-tuning jobs)
    seed: int = 0

    def recorded_overrides(self) -> tuple[str, ...] | None:
        path = self.directory / JOB_FILE
        return tuple(json.loads(path.read_text())["overrides"]) if path.is_file() else None

    def record(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / JOB_FILE).write_text(json.dumps({"overrides": list(self.overrides)}, indent=1))


@dataclass(frozen=True)
class StageCall:
    """One `-m` invocation of an entry point: `jobs` share `common` overrides and differ in `seed` (or are one)."""

    script: str
    sweep_dir: Path
    subdir: str  # hydra.sweep.subdir, e.g. "mlm" or "seed${seed}"
    common: tuple[str, ...]
    jobs: tuple[Job, ...]
    label: str

    def argv(self, jobs: tuple[Job, ...], launcher: list[str]) -> list[str]:
        seeds = ",".join(str(job.seed) for job in jobs)
        return [
            self.script,
            "-m",
            *self.common,
            f"seed={seeds}",
            f"hydra.sweep.dir={self.sweep_dir}",
            f"hydra.sweep.subdir={self.subdir}",
            *launcher,
        ]


def _tags(**tags: str) -> list[str]:
    """Overrides that add each tag to the run's `logger.tags` (recorded as lmlab.<key>)."""
    return [f"+logger.tags.{key}={hydra_value(value)}" for key, value in tags.items()]


def pretraining_overrides(forwarded: list[str]) -> list[str]:
    """The study's model and data for a pretraining run: all but the layout, which each objective sets."""
    return [o for o in forwarded if not o.startswith("model.layout=")]


def pretraining_calls(
    settings: StudySettings,
    study_dir: Path,
    steps: dict[str, int],
    forwarded: list[str],
    tracking: list[str],
    seed: int,
) -> list[StageCall]:
    calls = []
    for objective in settings.objectives:
        if objective == SCRATCH:
            continue
        common = (
            *pretraining_overrides(forwarded),
            f"objective={objective}",
            *settings.pretrain,
            f"trainer.max_steps={steps[objective]}",
            f"experiment={settings.name}",
            *tracking,
            *_tags(study=settings.name, study_objective=objective),
        )
        job = Job(study_dir / "pretrain" / objective, (*common, f"seed={seed}"), objective, seed=seed)
        calls.append(StageCall("train.py", study_dir / "pretrain", objective, common, (job,), f"pretrain {objective}"))
    return calls


def finetuning_calls(
    settings: StudySettings, study_dir: Path, forwarded: list[str], tracking: list[str]
) -> list[StageCall]:
    calls = []
    for task in settings.task_list():
        for objective in settings.objectives:
            calls.append(_finetuning_call(settings, study_dir, task, objective, forwarded, tracking))
    return calls


def _finetuning_call(
    settings: StudySettings,
    study_dir: Path,
    task: StudyTask,
    objective: str,
    forwarded: list[str],
    tracking: list[str],
) -> StageCall:
    if objective == SCRATCH:
        start = [*forwarded, "pretrained=none"]
    else:
        start = [f"pretrained={hydra_value(str(study_dir / 'pretrain' / objective))}"]
    common = (
        *task.overrides(),
        *start,
        *settings.finetune,
        f"experiment={settings.name}",
        *tracking,
        *_tags(study=settings.name, study_task=task.name, study_objective=objective),
    )
    sweep_dir = study_dir / "finetune" / task.name / objective
    jobs = tuple(
        Job(sweep_dir / f"seed{seed}", (*common, f"seed={seed}"), objective, task.name, seed)
        for seed in range(settings.seeds)
    )
    return StageCall("finetune.py", sweep_dir, "seed${seed}", common, jobs, f"fine-tune {task.name} from {objective}")
