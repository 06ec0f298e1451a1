"""Export a run for other tools: `python export.py run=<dir or run id> format=hf out=exported/bert-mlm`."""

import os
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from lmlab.config_schema import parse
from lmlab.publishing.run import ExportConfig, export
from lmlab.runs.entry import run_job
from lmlab.runs.hydra_guard import guard_compositions

os.environ.setdefault("LMLAB_ROOT", str(Path(__file__).resolve().parent))
ConfigStore.instance().store(name="export_schema", node=ExportConfig)
guard_compositions("export", ExportConfig)


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    run_job(cfg, lambda c, _: export(parse(c, ExportConfig)), owns_run_dir=False)


if __name__ == "__main__":
    main()
