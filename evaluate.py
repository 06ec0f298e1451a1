"""Held-out perplexity of a pretraining run on any corpus: `python evaluate.py run=<dir or run id> data=...`."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from lmlab.config_schema import parse
from lmlab.pretraining.evaluate import EvaluateConfig, evaluate_run, register_evaluate_configs
from lmlab.runs.entry import run_job
from lmlab.runs.hydra_guard import guard_compositions

os.environ.setdefault("LMLAB_ROOT", str(Path(__file__).resolve().parent))
register_evaluate_configs()
guard_compositions("evaluate", EvaluateConfig)


def evaluate(cfg: DictConfig, _: Path) -> None:
    c = parse(cfg, EvaluateConfig)
    metrics = evaluate_run(c.run, c.data, Path(c.paths.cache_dir), c.tracking_uri, c.seed, c.max_batches, c.adapt)
    print(f"run={c.run} data={c.data.name}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run_job(cfg, evaluate, owns_run_dir=False)


if __name__ == "__main__":
    main()
