"""Where a stage's backbone starts: a pretraining (or any exported) run's weights and tokenizer, or a fresh
backbone with the tokenizer its data trains."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from hydra.core.hydra_config import HydraConfig

from lmlab.data.cache import file_digest
from lmlab.data.config import DataConfig
from lmlab.data.corpus import build_corpus
from lmlab.data.tokenizer import TrainedTokenizer, load_or_train_tokenizer
from lmlab.errors import InputError
from lmlab.models import Backbone, ModelConfig
from lmlab.runs.exports import load_export


@dataclass
class StartingPoint:
    backbone: Backbone
    tokenizer: TrainedTokenizer
    lineage: dict[str, str]  # MLflow tags linking the fine-tune to its pretraining run


def starting_point(
    pretrained: str, model: ModelConfig, data: DataConfig, tracking_uri: str, cache: Path
) -> StartingPoint:
    """The backbone and tokenizer of `pretrained` (an MLflow run id, a run or export dir), or (pretrained=none) a
    fresh backbone of `model` with the tokenizer `data` trains — the same as a pretraining run on that data would
    use."""
    if pretrained.lower() == "none":
        tokenizer = load_or_train_tokenizer(build_corpus(data, cache / "hf"), data.tokenizer, cache)
        backbone = Backbone(replace(model, vocab_size=tokenizer.vocab_size))
        return StartingPoint(backbone, tokenizer, {"lmlab.pretrained": "none", "lmlab.pretrained_objective": "none"})
    exported = load_export(pretrained, tracking_uri, cache)
    if data.tokenizer.path:
        theirs, ours = file_digest(exported.tokenizer.path), file_digest(data.tokenizer.path)
        if theirs != ours:
            raise InputError(
                f"data.tokenizer.path={data.tokenizer.path} (sha256 {ours[:16]}) is not the tokenizer of "
                f"pretrained={pretrained} (sha256 {theirs[:16]}, fingerprint {exported.tokenizer.fingerprint}); "
                "a pretrained backbone only understands its own tokenizer — drop data.tokenizer.path"
            )
    lineage = {
        "lmlab.pretrained": pretrained,
        "lmlab.pretrained_run_id": exported.run_id,
        "lmlab.pretrained_objective": exported.objective_name,
        "lmlab.pretrained_step": str(exported.global_step),
        "lmlab.pretrained_path": str(exported.path),
    }
    return StartingPoint(exported.backbone(), exported.tokenizer, lineage)


def refuse_unused_architecture(pretrained: str) -> None:
    """`model` and `data` describe the backbone and tokenizer of pretrained=none; a pretrained run brings its own, so
    an override of them would be ignored (data.tokenizer.path is checked against the run's tokenizer instead)."""
    if pretrained.lower() == "none" or not HydraConfig.initialized():
        return
    ignored = [
        o
        for o in HydraConfig.get().overrides.task
        if o.lstrip("+~").split("=")[0].split(".")[0] in ("model", "data")
        and not o.lstrip("+").startswith("data.tokenizer.path=")
    ]
    if ignored:
        raise InputError(
            f"{ignored} would be ignored: with pretrained={pretrained} the architecture and tokenizer come "
            "from that run (model and data are for pretrained=none). Drop them, or start from scratch with "
            "pretrained=none"
        )
