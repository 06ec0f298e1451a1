"""A run's export directory, the hand-off between stages: written by `write_export`, read back by `load_export`
(from the directory, a run's output dir or an MLflow run id, whose artifacts are the same files).

`model.safetensors` holds the weights and, in its metadata, the model config, the tokenizer's fingerprint and
sha256 and what the stage adds (objective, step, labels, lineage); `tokenizer.json` sits beside it. Nothing read
back is instantiated by name: the model config is parsed into `ModelConfig` field by field and weights are
safetensors.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_model
from tokenizers import Tokenizer

from lmlab.data.cache import atomic_directory, file_digest
from lmlab.data.tokenizer import TrainedTokenizer
from lmlab.errors import InputError, MissingInputFile
from lmlab.models import Backbone, ModelConfig
from lmlab.tracking.identity import redact

WEIGHTS_FILE = "model.safetensors"


@dataclass
class ExportedRun:
    path: Path  # the export directory
    model_cfg: ModelConfig
    weights: dict[str, torch.Tensor]  # backbone.* and head.* tensors
    tokenizer: TrainedTokenizer
    objective: dict  # the objective's config, as data
    global_step: int
    run_id: str  # "" when the run was not tracked

    @property
    def objective_name(self) -> str:
        return self.objective.get("name", "unknown")

    def backbone(self) -> Backbone:
        """A backbone of the recorded architecture holding the pretrained weights."""
        backbone = Backbone(self.model_cfg)
        load_checked(backbone, strip_prefix(self.weights, "backbone."), str(self.path / WEIGHTS_FILE))
        return backbone


def write_export(
    out_dir: Path,
    weights: torch.nn.Module,
    model_cfg: ModelConfig,
    tokenizer: TrainedTokenizer,
    metadata: dict[str, str],
    texts: dict[str, str],
) -> Path:
    """Write `weights` (a module whose state dict holds backbone.* and head.*), the tokenizer and the text files
    `texts` (name -> content) into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metadata = {
        "model_config": json.dumps(asdict(model_cfg)),
        "tokenizer_fingerprint": tokenizer.fingerprint,
        "tokenizer_sha256": file_digest(tokenizer.path),
        **metadata,
    }
    save_model(weights, str(out_dir / WEIGHTS_FILE), metadata=metadata)
    if tokenizer.path.resolve() != (out_dir / "tokenizer.json").resolve():
        shutil.copyfile(tokenizer.path, out_dir / "tokenizer.json")
    for name, text in texts.items():
        (out_dir / name).write_text(text)
    return out_dir


def resolve(run: str, tracking_uri: str | None = None, cache_dir: Path | None = None) -> Path:
    """An export directory from an export dir, a run output dir (holding export/) or an MLflow run id.

    A run id's artifacts are downloaded into `cache_dir`/mlflow-runs (default: the project's .cache), keyed by the
    run id and the time the run last finished: a run extended since (resumed and finished again) is downloaded
    again, and a run that has not finished (no final weights yet) is refused, never cached."""
    path = Path(run).expanduser()
    if (path / "export" / WEIGHTS_FILE).is_file():
        return path / "export"
    if (path / WEIGHTS_FILE).is_file():
        return path
    if path.exists() or "/" in run:
        raise MissingInputFile(f"{run}: no {WEIGHTS_FILE} in {path} or {path / 'export'}")
    if not re.fullmatch(r"[0-9a-f]{32}", run):
        raise MissingInputFile(f"{run} is neither a run or export directory nor an MLflow run id (32 hex digits)")
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    where = redact(tracking_uri or "")
    try:
        info = MlflowClient(tracking_uri).get_run(run).info
    except MlflowException as err:
        raise MissingInputFile(f"{run} is neither a run directory nor an MLflow run id in {where}: {err}") from err
    if info.status != "FINISHED":
        raise InputError(
            f"MLflow run {run} is {info.status}: only a FINISHED run has its final weights; wait until it finishes "
            "(or resume it), or name one of its checkpoints' run directory"
        )
    cache_dir = cache_dir or Path(os.environ.get("LMLAB_ROOT", ".")) / ".cache"
    final = cache_dir / "mlflow-runs" / f"{run}-finished{info.end_time}"
    if (final / WEIGHTS_FILE).is_file():
        return final
    try:
        with atomic_directory(final) as tmp:
            mlflow.artifacts.download_artifacts(run_id=run, tracking_uri=tracking_uri, dst_path=str(tmp))
            if not (tmp / WEIGHTS_FILE).is_file():
                raise MissingInputFile(f"MLflow run {run} in {where} has no {WEIGHTS_FILE} artifact (no export)")
    except MlflowException as err:
        raise MissingInputFile(f"MLflow run {run} in {where}: its artifacts could not be downloaded: {err}") from err
    return final


def load_export(run: str, tracking_uri: str | None = None, cache_dir: Path | None = None) -> ExportedRun:
    path = resolve(run, tracking_uri, cache_dir)
    weights_file = path / WEIGHTS_FILE
    with safe_open(str(weights_file), "pt") as f:
        metadata = f.metadata() or {}
    if "model_config" not in metadata:
        raise InputError(f"{weights_file} has no model_config metadata; was it exported by lmlab?")
    stored = json.loads(metadata["model_config"])
    cfg = ModelConfig(**{f.name: stored[f.name] for f in fields(ModelConfig) if f.name in stored})
    tokenizer_file = path / "tokenizer.json"
    expected = metadata.get("tokenizer_sha256")
    actual = file_digest(tokenizer_file)
    if expected and expected != actual:
        raise InputError(
            f"{tokenizer_file} is not the tokenizer this run was trained with: sha256 {actual[:16]} != "
            f"{expected[:16]} recorded in {weights_file}"
        )
    tokenizer = TrainedTokenizer(
        Tokenizer.from_file(str(tokenizer_file)), metadata.get("tokenizer_fingerprint", actual[:16]), tokenizer_file
    )
    if tokenizer.vocab_size != cfg.vocab_size:
        raise InputError(
            f"{tokenizer_file} has {tokenizer.vocab_size} tokens but the model in {weights_file} has "
            f"model.vocab_size={cfg.vocab_size}"
        )
    return ExportedRun(
        path=path,
        model_cfg=cfg,
        weights=load_file(str(weights_file)),
        tokenizer=tokenizer,
        objective=json.loads(metadata.get("objective", "{}")),
        global_step=int(metadata.get("global_step", 0)),
        run_id=metadata.get("run_id", ""),
    )


def load_checked(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict that names every missing, unexpected or differently shaped tensor."""
    own = module.state_dict()
    problems = [f"missing {k} {tuple(v.shape)}" for k, v in own.items() if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in own]
    problems += [
        f"{k}: {source} has {tuple(state[k].shape)}, the model expects {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if problems:
        raise InputError(f"the weights in {source} do not fit this architecture: " + "; ".join(problems[:8]))
    module.load_state_dict(state)


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
