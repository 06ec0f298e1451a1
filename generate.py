"""Generate from a trained decoder, prefix-LM or encoder-decoder run:
`python generate.py run=<dir, run id or hf:<dir or hub name>> prompt="..."`."""

import os
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from lmlab.config_schema import parse
from lmlab.generation import GenerateConfig, LoadedRun, complete
from lmlab.objectives import objective_traits
from lmlab.runs.entry import run_job
from lmlab.runs.hydra_guard import guard_compositions
from lmlab.runs.starting_point import load_run

os.environ.setdefault("LMLAB_ROOT", str(Path(__file__).resolve().parent))
ConfigStore.instance().store(name="generate_schema", node=GenerateConfig)
guard_compositions("generate", GenerateConfig)


def generate(cfg: DictConfig, _: Path) -> None:
    c = parse(cfg, GenerateConfig)
    exported, _ = load_run(c.run, c.tracking_uri, Path(c.cache_dir))
    run = LoadedRun(
        exported.backbone().eval(), exported.tokenizer.tokenizer, objective_traits(exported.objective_name).mode_token
    )
    print(c.prompt + " " + complete(run, c.prompt, c.generation, c.seed))


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    run_job(cfg, generate, owns_run_dir=False)


if __name__ == "__main__":
    main()
