"""Generate from a trained decoder, prefix-LM or encoder-decoder run:
`python generate.py run=<dir or run id> prompt="..."`."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from lmlab.generation import GenerationConfig, complete, load_run

os.environ.setdefault("LMLAB_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    generation = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(GenerationConfig), cfg.generation))
    run = load_run(str(cfg.run), cfg.tracking_uri)
    print(cfg.prompt + " " + complete(run, cfg.prompt, generation, cfg.seed))


if __name__ == "__main__":
    main()
