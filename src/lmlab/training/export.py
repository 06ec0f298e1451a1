"""The hand-off of a finished run: weights as safetensors, the tokenizer, the resolved config, the loss curve."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

from safetensors.torch import save_model

from lmlab.data.cache import file_digest
from lmlab.data.tokenizer import TrainedTokenizer
from lmlab.tracking.loss_curve import plot_loss_curve
from lmlab.training.exported import WEIGHTS_FILE
from lmlab.training.module import PretrainModule


def export_run(
    module: PretrainModule,
    tokenizer: TrainedTokenizer,
    resolved_config_yaml: str,
    history: dict[str, list[tuple[int, float]]],
    out_dir: Path,
    title: str,
    run_id: str | None = None,
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    metadata = {
        "model_config": json.dumps(asdict(module.backbone.cfg)),
        "objective": json.dumps(asdict(module.objective.cfg)),
        "tokenizer_fingerprint": tokenizer.fingerprint,
        "tokenizer_sha256": file_digest(tokenizer.path),
        "global_step": str(module.global_step),
        "run_id": run_id or "",
    }
    save_model(module.weights(), str(out_dir / WEIGHTS_FILE), metadata=metadata)
    shutil.copyfile(tokenizer.path, out_dir / "tokenizer.json")
    (out_dir / "config.yaml").write_text(resolved_config_yaml)
    plot_loss_curve(history, out_dir / "loss_curve.png", title)
    return out_dir
