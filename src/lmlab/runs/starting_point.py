"""Where a stage's backbone starts: a pretraining (or any exported) run's weights and tokenizer, a Hugging Face
model's (`hf:<path or hub name>`), or a fresh backbone with the tokenizer its data trains."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from hydra.core.hydra_config import HydraConfig

from lmlab.data.cache import file_digest
from lmlab.data.config import DataConfig
from lmlab.data.corpus import build_corpus
from lmlab.data.tokenizer import TrainedTokenizer, load_or_train_tokenizer
from lmlab.errors import InputError
from lmlab.hf.importing import is_hf, load_hf
from lmlab.models import Backbone, ModelConfig
from lmlab.runs.export_dir import ExportedRun, load_export


@dataclass
class StartingPoint:
    backbone: Backbone
    tokenizer: TrainedTokenizer
    lineage: dict[str, str]  # MLflow tags linking the fine-tune to its pretraining run


def starting_point(
    pretrained: str, model: ModelConfig, data: DataConfig, tracking_uri: str, cache: Path
) -> StartingPoint:
    """The backbone and tokenizer of `pretrained` (an MLflow run id, a run or export dir, hf:<path or hub name>), or
    (pretrained=none) a fresh backbone of `model` with the tokenizer `data` trains — the same as a pretraining run on
    that data would use."""
    if pretrained.lower() == "none":
        tokenizer = load_or_train_tokenizer(build_corpus(data, cache / "hf"), data.tokenizer, cache)
        backbone = Backbone(replace(model, vocab_size=tokenizer.vocab_size))
        return StartingPoint(backbone, tokenizer, {"lmlab.pretrained": "none", "lmlab.pretrained_objective": "none"})
    exported, lineage = load_run(pretrained, tracking_uri, cache)
    check_tokenizer_path(data, exported, "pretrained", pretrained)
    return StartingPoint(exported.backbone(), exported.tokenizer, lineage)


def load_run(source: str, tracking_uri: str | None, cache: Path) -> tuple[ExportedRun, dict[str, str]]:
    """The run `source` names (an MLflow run id, a run or export dir, or hf:<path or hub name>: a Hugging Face model
    mapped into lmlab's backbone) and the lineage tags that record it. Every stage and tool that reads a run reads it
    here, so each accepts the same sources."""
    if is_hf(source):
        checkpoint = load_hf(source, cache)
        run = ExportedRun(
            checkpoint.path,
            checkpoint.model_cfg,
            checkpoint.weights,
            checkpoint.tokenizer,
            {"name": checkpoint.objective},
            0,
            "",
        )
        return run, checkpoint.lineage
    exported = load_export(source, tracking_uri, cache)
    lineage = {
        "lmlab.pretrained": source,
        "lmlab.pretrained_run_id": exported.run_id,
        "lmlab.pretrained_objective": exported.objective_name,
        "lmlab.pretrained_step": str(exported.global_step),
        "lmlab.pretrained_path": str(exported.path),
    }
    return exported, lineage


def check_tokenizer_path(data: DataConfig, start: ExportedRun, key: str, source: str) -> None:
    """A data.tokenizer.path given beside a starting run must be that run's tokenizer."""
    if not data.tokenizer.path:
        return
    theirs, ours = file_digest(start.tokenizer.path), file_digest(data.tokenizer.path)
    if theirs != ours:
        raise InputError(
            f"data.tokenizer.path={data.tokenizer.path} (sha256 {ours[:16]}) is not the tokenizer of "
            f"{key}={source} (sha256 {theirs[:16]}, fingerprint {start.tokenizer.fingerprint}); "
            "a pretrained backbone only understands its own tokenizer — drop data.tokenizer.path"
        )


def refuse_unused_architecture(
    source: str, key: str = "pretrained", groups: tuple[str, ...] = ("model", "data")
) -> None:
    """`model` (and, for a stage that reads no corpus, `data`) describe the backbone and tokenizer of a fresh start;
    a starting run brings its own, so an override of them would be ignored (data.tokenizer.path is checked against
    the run's tokenizer instead)."""
    if source.lower() == "none" or not HydraConfig.initialized():
        return
    ignored = [
        o
        for o in HydraConfig.get().overrides.task
        if o.lstrip("+~").split("=")[0].split(".")[0] in groups and not o.lstrip("+").startswith("data.tokenizer.path=")
    ]
    if ignored:
        raise InputError(
            f"{ignored} would be ignored: with {key}={source} the architecture and tokenizer come from that run "
            f"({' and '.join(groups)} are for {key}=none). Drop them, or start from scratch with {key}=none"
        )
