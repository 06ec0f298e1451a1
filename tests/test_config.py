"""Composition of every config group, cross-group checks and the command-line help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from lmlab.config_schema import parse, validate_tree
from lmlab.errors import InputError
from lmlab.finetuning.config import FinetuneConfig, register_finetune_configs
from lmlab.pretraining.config import TrainConfig
from lmlab.runs.config import job_dirname
from lmlab.tasks import available_families, family_class

from .conftest import CONF, ROOT, run_env

GROUPS = ["model", "objective", "data", "trainer", "logger", "paths"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_of_every_group_composes_and_validates(compose_config, group):
    for option in _options(group):
        cfg = compose_config(f"{group}={option}")
        conf: TrainConfig = OmegaConf.to_object(cfg)
        if group == "data" and option == "text":
            conf.data.files = [str(ROOT / "requirements" / "lock.txt")]  # any existing text file
        if group == "trainer" and conf.trainer.accelerator == "gpu" and not torch.cuda.is_available():
            with pytest.raises(InputError, match="this machine has no CUDA GPU"):
                validate_tree(conf)
            continue
        validate_tree(conf)


def test_every_objective_yaml_is_a_known_objective(compose_config):
    from lmlab.objectives import available_objectives

    assert _options("objective") == available_objectives()


@pytest.mark.parametrize("objective, layout", [("mlm", "encoder"), ("clm", "decoder")])
def test_objective_picks_its_layout_whatever_the_model_size(compose_config, objective, layout):
    for model in _options("model"):
        conf = OmegaConf.to_object(compose_config(f"model={model}", f"objective={objective}"))
        assert conf.model.layout == layout
        validate_tree(conf)


def test_paths_are_absolute_under_the_project_root(compose_config, project):
    conf = OmegaConf.to_object(compose_config())
    assert conf.paths.output_dir == f"{project}/outputs"
    assert conf.logger.tracking_uri == f"sqlite:///{project}/mlflow.db"


def test_misspelt_key_and_wrong_type_fail_at_composition(compose_config):
    with pytest.raises(ConfigCompositionException) as err:
        compose_config("model.n_layer=3")
    assert "Key 'n_layer' not in 'ModelConfig'" in str(err.value.__cause__)
    with pytest.raises(ConfigCompositionException) as err:
        compose_config("model.n_layers=many")
    assert isinstance(err.value.__cause__, ValidationError)
    assert "model.n_layers" in str(err.value.__cause__)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.block_size=1024"], "data.block_size=1024 exceeds model.max_positions=512"),
        (["data=text"], "needs data.files"),
        (["optim.schedule=step"], "optim.schedule='step'"),
        (["model.positions=alibi"], "model.positions='alibi' is not supported"),
        (["objective.name=nope"], "objective.name='nope' is not an objective"),
        (["objective=clm", "model.layout=encoder"], "objective=clm needs model.layout=decoder"),
    ],
)
def test_incompatible_settings_name_the_conflict(compose_config, overrides, message):
    conf = OmegaConf.to_object(compose_config(*overrides))
    with pytest.raises(ValueError, match=message):
        validate_tree(conf)


def test_job_dirname_is_deterministic_and_safe():
    assert job_dirname("") == "defaults"
    assert job_dirname("data.files=[/a/b.txt],seed=1") == "data.files=_a_b.txt_,seed=1"
    long = "x=" + "y" * 300
    assert job_dirname(long) == job_dirname(long) and len(job_dirname(long)) <= 120
    assert job_dirname(long) != job_dirname(long + "z")


def test_help_lists_groups_and_options(tmp_path: Path):
    out = subprocess.run(
        [sys.executable, "train.py", "--help"],
        cwd=ROOT,
        env=run_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    for group in GROUPS:
        assert f"{group}: " in out
    assert "model: base, bert_style, gpt2_124m, gpt2_style, large, llama_style, small, t5_style, tiny" in out
    assert "objective: clm, denoise, electra, mixture, mlm, nsp, prefix_lm, sop, span, ul2" in out
    assert "hydra/launcher: basic, local, slurm" in out


def test_every_task_yaml_names_a_family_module_and_composes_as_its_config(project):
    register_finetune_configs()
    for path in sorted((CONF / "task").glob("*.yaml")):
        family = OmegaConf.load(path)["family"]
        assert family in available_families(), f"{path.name}: no module lmlab.tasks.{family}"
        files = [f"task.train_file={__file__}", f"task.validation_file={__file__}"] if "???" in path.read_text() else []
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("finetune", overrides=[f"task={path.stem}", *files])
        task = parse(cfg, FinetuneConfig).task_config()
        assert type(task) is family_class(family).Config and task.name == path.stem


def test_a_task_key_of_another_family_is_refused():
    with pytest.raises(InputError, match=r"task.doc_stride is not a setting"):
        family_class("classification").parse_config({"name": "x", "family": "classification", "doc_stride": 3})


def test_files_given_to_a_source_that_reads_none_are_refused_not_ignored():
    from lmlab.data.config import DataConfig

    with pytest.raises(InputError, match="data.files is set but data.source=synthetic reads no files"):
        DataConfig(source="synthetic", files=["corpus.txt"]).validate()


@pytest.mark.parametrize("model", ["base", "large", "gpt2_124m"])
@pytest.mark.parametrize("data", ["wikitext103", "wikipedia", "bookcorpus", "c4", "fineweb"])
def test_gpu_scale_presets_have_shapes_that_fill_tensor_cores(compose_config, model, data):
    """Every matmul dimension of the GPU-scale presets is a multiple of 64 (bf16 tensor-core tiles): widths, head
    size, block length and the vocabulary of the output projection."""
    conf = parse(compose_config(f"model={model}", f"data={data}", "objective=clm", "model.layout=decoder"), TrainConfig)
    m = conf.model
    dims = {"d_model": m.d_model, "d_ff": m.d_ff, "head size": m.d_model // m.n_heads}
    dims |= {"block_size": conf.data.block_size, "vocab_size": conf.data.tokenizer.vocab_size}
    assert {name: size for name, size in dims.items() if size % 64} == {}
