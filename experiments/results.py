"""Build an experiment's results table from its MLflow runs and write it into experiments/README.md.

    python experiments/results.py objectives [--tracking-uri sqlite:///.../mlflow.db] [--print]

Pretraining: the newest sweep of runs whose `experiment` param is the given name, one row per run. Meta-learning
and RL: the newest finished run of each (method, seed) of the experiment, one row per method. The table replaces the
block between `<!-- results:NAME -->` and `<!-- /results:NAME -->` in the README (nothing else is touched).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from lmlab.meta.results import domains_table, fewshot_table, newest_per_method_and_seed
from lmlab.rl.results import newest_per_algorithm_and_seed, rl_table

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "experiments" / "README.md"


def finished_runs(client: MlflowClient, experiment: str, mlflow_experiment: str = "lmlab") -> list[Run]:
    """The FINISHED runs whose `experiment` param is `experiment`, newest first."""
    found = client.get_experiment_by_name(mlflow_experiment)
    if found is None:
        raise SystemExit(f"no MLflow experiment {mlflow_experiment!r} in {client.tracking_uri}")
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"params.experiment = '{experiment}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    if not runs:
        raise SystemExit(f"no finished runs with experiment={experiment} in {client.tracking_uri}")
    return runs


def sweep_runs(client: MlflowClient, experiment: str) -> list[Run]:
    """The FINISHED runs of the newest sweep whose `experiment` param is `experiment`."""
    runs = finished_runs(client, experiment)
    newest_sweep = runs[0].data.tags.get("lmlab.sweep")
    return [r for r in runs if r.data.tags.get("lmlab.sweep") == newest_sweep]


def _first_and_last(client: MlflowClient, run: Run, key: str) -> tuple[float, float] | None:
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
    return (history[0][1], history[-1][1]) if history else None


def row(client: MlflowClient, run: Run) -> dict[str, str]:
    metrics, params = run.data.metrics, run.data.params
    loss = _first_and_last(client, run, "val/loss")
    tokens_per_sec = metrics.get("train/device/items_per_sec", 0.0)
    flops_per_token = metrics.get("train/device/flops_per_sec", 0.0) / max(tokens_per_sec, 1e-9)
    if "val/ppl" in metrics:
        headline = f"ppl {metrics['val/ppl']:.2f}, acc {metrics['val/acc']:.3f}"
    else:
        extras = {k.removeprefix("val/"): v for k, v in metrics.items() if k.startswith("val/") and k.endswith("acc")}
        headline = ", ".join(f"{k} {v:.3f}" for k, v in sorted(extras.items()))
    wall = (run.info.end_time - run.info.start_time) / 1000
    return {
        "objective": run.data.tags.get("lmlab.objective", "?"),
        "layout": params.get("model.layout", "?"),
        "params (M)": f"{int(run.data.tags.get('lmlab.n_params', 0)) / 1e6:.2f}",
        "tokens": f"{metrics.get('train/lengths', 0):,.0f}",
        "val/loss step 0 → end": f"{loss[0]:.2f} → {loss[1]:.2f}" if loss else "",
        "end": headline,
        "MFLOP/token (train)": f"{flops_per_token / 1e6:.1f}",
        "tokens/s": f"{tokens_per_sec:,.0f}",
        "wall": f"{wall / 60:.1f} min",
    }


def markdown(rows: list[dict[str, str]]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r[h] for h in header) + " |" for r in rows]
    return "\n".join(lines)


def write_block(readme: Path, name: str, body: str) -> None:
    start, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
    text = readme.read_text()
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    block = f"{start}\n{body}\n{end}"
    if not pattern.search(text):
        raise SystemExit(f"{readme} has no {start} ... {end} block to fill")
    readme.write_text(pattern.sub(lambda _: block, text))


def provenance(runs: list[Run]) -> str:
    """The sweeps the runs come from, newest first, each with its commits: a table may gather rows of several
    sweeps, and a sweep extended later holds runs of several commits."""
    commits: dict[str, dict[str, None]] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time, reverse=True):
        sweep = commits.setdefault(run.data.tags.get("lmlab.sweep", "?"), {})
        sweep[run.data.tags.get("lmlab.git_commit", "?")[:10]] = None
    parts = [f"{sweep} (commit{'s' if len(c) > 1 else ''} {', '.join(c)})" for sweep, c in commits.items()]
    return ("sweep " if len(parts) == 1 else "sweeps ") + ", ".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("experiment")
    parser.add_argument("--tracking-uri", default=f"sqlite:///{ROOT / 'mlflow.db'}")
    parser.add_argument("--print", action="store_true", help="print the table instead of writing the README")
    parser.add_argument(
        "--with",
        dest="pooled",
        action="append",
        default=[],
        metavar="EXPERIMENT",
        help="meta-learning: pool the runs of another experiment too (e.g. a budget check beside its main sweep)",
    )
    args = parser.parse_args(argv)
    client = MlflowClient(args.tracking_uri)
    runs = sweep_runs(client, args.experiment)
    if runs[0].data.tags.get("lmlab.kind") == "meta":
        # Methods are often added to a few-shot experiment sweep by sweep: the newest run of each (method, seed).
        pooled = [run for name in [args.experiment, *args.pooled] for run in finished_runs(client, name)]
        runs = newest_per_method_and_seed(sorted(pooled, key=lambda r: -r.info.start_time))
        domains = runs[0].data.tags.get("lmlab.episode_kind") == "domains"
        table = (domains_table if domains else fewshot_table)(client, runs)
    elif runs[0].data.tags.get("lmlab.kind") == "rl":
        runs = newest_per_algorithm_and_seed(finished_runs(client, args.experiment))
        table = rl_table(client, runs)
    else:
        table = markdown(sorted((row(client, r) for r in runs), key=lambda r: r["objective"]))
    source = f"`python experiments/results.py {args.experiment}` from {provenance(runs)}"
    body = f"{table}\n\n_Generated by {source}._"
    if args.print:
        print(body)
    else:
        write_block(README, args.experiment, body)
        print(f"wrote the table of {len(runs)} runs to {README}", file=sys.stderr)


if __name__ == "__main__":
    main()
