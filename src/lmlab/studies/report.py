"""An objective study's report, built from MLflow alone: the study run (its budget and FLOPs per step) and its child
runs (tag `lmlab.study`). Writes report.md and PNG plots; nothing in it is typed by hand."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from mlflow.entities import Run  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from lmlab.stats import Estimate, mean_ci, paired_difference  # noqa: E402
from lmlab.studies.config import SCRATCH  # noqa: E402

# The published rankings a study is compared with (fine-tuned accuracy on GLUE-style classification), with the
# scale each was measured at: parameters and pretraining tokens.
PUBLISHED = (
    (
        "ELECTRA (Clark et al. 2020, Table 1/8)",
        ("electra", "mlm", "clm"),
        "ELECTRA-Small 14M params, 1M steps x 128 x 128 = 16.8B tokens; BERT-Small (MLM) and GPT (CLM) baselines",
        14e6,
        16.8e9,
    ),
    (
        "T5 objectives (Raffel et al. 2020, Table 4/5)",
        ("span", "mlm", "clm"),
        "T5-base 220M params, 2^35 = 34B tokens; span corruption ~ BERT-style MLM > prefix LM > causal LM",
        220e6,
        34e9,
    ),
)


@dataclass
class Pretraining:
    objective: str
    run: Run
    flops_per_step: float
    curve: list[tuple[float, float]] = field(default_factory=list)  # (training FLOPs, val/loss)

    @property
    def steps(self) -> int:
        return int(self.run.data.params["trainer.max_steps"])

    def late_change(self) -> float | None:
        """Relative change of val/loss over the last fifth of training (negative: still improving), or None."""
        if len(self.curve) < 2:
            return None
        end_flops, end = self.curve[-1]
        start = min(self.curve, key=lambda point: abs(point[0] - 0.8 * end_flops))[1]
        return (end - start) / start if start else None


@dataclass
class Downstream:
    task: str
    metric: str
    scores: dict[str, dict[int, float]]  # objective -> seed -> score


def _children(client: MlflowClient, study_run: Run) -> list[Run]:
    return client.search_runs(
        [study_run.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{study_run.info.run_id}' and attributes.status = 'FINISHED'",
        max_results=10000,
    )


def collect(client: MlflowClient, study_run_id: str) -> tuple[Run, list[Pretraining], list[Downstream]]:
    study = client.get_run(study_run_id)
    tags = study.data.tags
    pretraining: list[Pretraining] = []
    by_task: dict[str, Downstream] = {}
    for run in _children(client, study):
        objective = run.data.tags["lmlab.study_objective"]
        task = run.data.tags.get("lmlab.study_task")
        if task is None:
            flops = float(tags[f"lmlab.flops_per_step.{objective}"])
            history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val/loss"))
            pretraining.append(Pretraining(objective, run, flops, [(step * flops, value) for step, value in history]))
            continue
        metric = f"val/{run.data.tags['lmlab.main_metric']}"
        entry = by_task.setdefault(task, Downstream(task, metric, defaultdict(dict)))
        entry.scores[objective][int(run.data.params["seed"])] = run.data.metrics[metric]
    order = {name: i for i, name in enumerate(tags["lmlab.study_objectives"].split(","))}
    pretraining.sort(key=lambda p: order.get(p.objective, len(order)))
    return study, pretraining, [by_task[name] for name in tags["lmlab.study_tasks"].split(",") if name in by_task]


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _pretraining_table(runs: list[Pretraining]) -> str:
    rows = []
    for p in runs:
        metrics = p.run.data.metrics
        extras = ", ".join(
            f"{k.removeprefix('val/')} {v:.3f}"
            for k, v in sorted(metrics.items())
            if k.startswith("val/") and k != "val/loss" and not k.endswith("_loss")
        )
        wall = (p.run.info.end_time - p.run.info.start_time) / 1000
        rows.append(
            [
                p.objective,
                f"{p.steps:,}",
                f"{metrics.get('train/lengths', 0):,.0f}",
                _flops(p.steps * p.flops_per_step),
                f"{metrics.get('val/loss', math.nan):.3f}",
                "" if (change := p.late_change()) is None else f"{change:+.1%}",
                extras,
                f"{wall / 60:.1f} min",
                f"{metrics.get('train/device/items_per_sec', 0):,.0f}",
            ]
        )
    header = [
        "objective",
        "steps",
        "tokens",
        "training FLOPs",
        "val/loss",
        "last fifth",
        "other validation metrics",
        "wall",
        "tokens/s",
    ]
    return _markdown(header, rows)


def _ranking(task: Downstream, estimates: dict[str, Estimate]) -> str:
    """`a > b ≈ c`: `>` where the paired difference's 95% interval excludes zero, `≈` where it does not."""
    ordered = sorted(estimates, key=lambda o: -estimates[o].mean)
    parts = [ordered[0]]
    for better, worse in zip(ordered, ordered[1:], strict=False):
        diff = paired_difference(task.scores[better], task.scores[worse])
        parts.append((">" if diff.excludes_zero else "≈") + f" {worse}")
    return " ".join(parts)


def _downstream_table(task: Downstream) -> tuple[str, str]:
    estimates = {o: mean_ci(list(s.values())) for o, s in task.scores.items()}
    best = max((o for o in estimates if o != SCRATCH), key=lambda o: estimates[o].mean, default=None)
    rows = []
    for objective, estimate in sorted(estimates.items(), key=lambda kv: -kv[1].mean):
        scratch = (
            str(paired_difference(task.scores[objective], task.scores[SCRATCH]))
            if SCRATCH in task.scores and objective != SCRATCH
            else ""
        )
        to_best = (
            str(paired_difference(task.scores[objective], task.scores[best]))
            if best is not None and objective not in (best, SCRATCH)
            else ""
        )
        rows.append([objective, str(estimate), str(estimate.n), scratch, to_best])
    metric = task.metric.removeprefix("val/")
    table = _markdown(["objective", f"{metric} (mean ± 95% CI)", "seeds", "vs scratch", "vs best"], rows)
    return table, _ranking(task, estimates)


def _plot_curves(runs: list[Pretraining], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for p in runs:
        if p.curve:
            ax.plot([f / 1e12 for f, _ in p.curve], [v for _, v in p.curve], marker=".", label=p.objective)
    ax.set_xlabel("training TFLOP")
    ax.set_ylabel("validation loss (each objective's own)")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_downstream(tasks: list[Downstream], path: Path) -> None:
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(4 * max(1, len(tasks)), 3.5), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=False):
        names = list(task.scores)
        estimates = [mean_ci(list(task.scores[n].values())) for n in names]
        errors = [0.0 if math.isnan(e.half_width) else e.half_width for e in estimates]
        ax.bar(names, [e.mean for e in estimates], yerr=errors, capsize=4, color="tab:blue", alpha=0.7)
        for i, name in enumerate(names):
            ax.scatter([i] * len(task.scores[name]), list(task.scores[name].values()), color="black", s=8, zorder=3)
        low = min(min(s.values()) for s in task.scores.values())
        ax.set_ylim(max(0.0, low - 0.1), None)
        ax.set_title(task.task)
        ax.set_ylabel(task.metric.removeprefix("val/"))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _flops(value: float) -> str:
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value / 1e6:.2f} MFLOP"


def _pair_verdict(task: Downstream, better: str, worse: str) -> str:
    """Whether the study's scores confirm `better` > `worse` (the published order) on `task`."""
    diff = paired_difference(task.scores[better], task.scores[worse])
    if not diff.excludes_zero:
        return f"{better} vs {worse}: {diff} — not resolved at this number of seeds"
    return f"{better} vs {worse}: {diff} — {'agrees' if diff.mean > 0 else 'disagrees'}"


def _comparison(pretraining: list[Pretraining], downstream: list[Downstream]) -> str:
    n_params = max((int(p.run.data.tags.get("lmlab.n_params", 0)) for p in pretraining), default=0)
    tokens = max((p.run.data.metrics.get("train/lengths", 0.0) for p in pretraining), default=0.0)
    lines = []
    for name, order, scale, ref_params, ref_tokens in PUBLISHED:
        compared = [o for o in order if o in {p.objective for p in pretraining}]
        if len(compared) < 2:
            continue
        lines.append(f"- **{name}**: {' > '.join(compared)} ({scale}).")
        for task in downstream:
            pairs = [(a, b) for i, a in enumerate(compared) for b in compared[i + 1 :]]
            verdicts = [_pair_verdict(task, a, b) for a, b in pairs if a in task.scores and b in task.scores]
            lines.append(f"  - {task.task}: " + "; ".join(verdicts) + ".")
        lines.append(
            f"  - Scale here: {n_params / 1e6:.2f}M parameters ({n_params / ref_params:.2%} of the published model), "
            f"{tokens:,.0f} pretraining tokens per objective ({tokens / ref_tokens:.2e} of the published budget)."
        )
    return "\n".join(lines)


def write_report(client: MlflowClient, study_run_id: str, out_dir: Path) -> Path:
    study, pretraining, downstream = collect(client, study_run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    tags = study.data.tags
    _plot_curves(pretraining, out_dir / "pretraining_curves.png")
    _plot_downstream(downstream, out_dir / "downstream.png")
    sections = [
        f"# Objective study `{tags['lmlab.study']}`",
        f"_Generated from MLflow run {study.info.run_id} (`python study.py ...`, commit "
        f"{tags.get('lmlab.git_commit', '?')[:10]}); rerunning the study regenerates it._",
        "## Budget",
        tags["lmlab.study_budget"],
        "## Pretraining",
        _pretraining_table(pretraining),
        "Validation loss is each objective's own loss: comparable along a curve, not across objectives. `last fifth`: "
        "its relative change over the last 20% of training (clearly negative: the budget ended while the objective "
        "was still learning).",
        "![validation loss vs training FLOPs](pretraining_curves.png)",
        "## Downstream",
        "Mean ± 95% t-interval over fine-tuning seeds; `vs scratch` and `vs best` are paired differences (same seed).",
    ]
    for task in downstream:
        table, ranking = _downstream_table(task)
        sections += [f"### {task.task}", table, f"Ranking: {ranking}  (`>`: the paired 95% interval excludes 0)"]
    sections += ["![downstream scores](downstream.png)", "## Compared with the published rankings"]
    sections.append(_comparison(pretraining, downstream))
    path = out_dir / "report.md"
    path.write_text("\n\n".join(sections) + "\n")
    return path
