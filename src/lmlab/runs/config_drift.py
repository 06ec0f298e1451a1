"""A resumed run must be the run that was started: its resolved config and the fingerprints of what it reads (its
corpus, its tokenizer) are recorded when it starts, and a resume whose config or corpus differs is refused (naming
every difference) unless `allow_config_change=true`; one whose tokenizer differs is always refused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from lmlab.atomic_file import write_text_atomic
from lmlab.errors import InputError
from lmlab.tracking.identity import flatten

CONFIG_FILE = "run_config.json"
INPUTS_FILE = "run_inputs.json"
# Inputs that the checkpoint's weights are bound to: continuing them under another value is never meaningful (the
# weights read through the tokenizer; an RL run's KL reference is rebuilt from its starting weights).
_BOUND_INPUTS = ("tokenizer_fingerprint", "start_weights")
# Settings that steer how a job runs, not what it computes.
RUN_CONTROL = (
    "resume",
    "ckpt_path",
    "allow_config_change",
    "trainer.enable_progress_bar",
    "data.num_workers",
    "logger.parent_run_id",
)
# Prefixes of settings that label a run without changing it.
_LABELS = ("logger.tags.",)


def record_config(run_dir: Path, resolved: dict[str, Any]) -> None:
    write_text_atomic(run_dir / CONFIG_FILE, json.dumps(_computed(resolved), indent=1, sort_keys=True))


def config_changes(run_dir: Path, resolved: dict[str, Any]) -> dict[str, list[str | None]]:
    """{key: [recorded value, new value]} for every setting that differs from the run's recorded config."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return {}
    recorded, now = json.loads(path.read_text()), _computed(resolved)
    return {
        key: [recorded.get(key), now.get(key)]
        for key in sorted(recorded.keys() | now.keys())
        if recorded.get(key) != now.get(key)
    }


def check_resume_config(run_dir: Path, resolved: dict[str, Any], allowed: bool) -> dict[str, list[str | None]]:
    changes = config_changes(run_dir, resolved)
    if changes and not allowed:
        listed = "; ".join(f"{key}: {old} -> {new}" for key, (old, new) in changes.items())
        raise InputError(
            f"{run_dir} holds a run started with a different config ({listed}). Resume it unchanged, pass "
            "allow_config_change=true to continue it with the new settings, or resume=false to start it afresh"
        )
    return changes


def _computed(resolved: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in flatten(resolved).items() if k not in RUN_CONTROL and not k.startswith(_LABELS)}


def start_inputs(tokenizer_fingerprint: str, weights: dict[str, Any]) -> dict[str, str]:
    """The inputs a stage that starts from a run (fine-tuning, meta-learning, RL) is bound to: the tokenizer and the
    starting weights, by content (a run extended since has other weights under the same id or directory)."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(name.encode())
        digest.update(weights[name].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return {"tokenizer_fingerprint": tokenizer_fingerprint, "start_weights": digest.hexdigest()[:16]}


def bind_inputs(run_dir: Path, inputs: dict[str, str], *, resuming: bool, allowed: bool, lead: bool) -> dict:
    """Check a resume's `inputs` against the recorded ones (`check_resume_inputs`), then (lead process) record
    them; the changes a resume continues with."""
    changes = check_resume_inputs(run_dir, inputs, allowed) if resuming else {}
    if lead:
        write_text_atomic(run_dir / INPUTS_FILE, json.dumps(inputs, indent=1, sort_keys=True))
    return changes


def check_resume_inputs(run_dir: Path, inputs: dict[str, str], allowed: bool) -> dict[str, list[str | None]]:
    """Refuse to resume a run whose inputs changed since it was recorded: always when the tokenizer changed (the
    checkpoint's weights are bound to it), and for other inputs (the corpus) unless `allowed`."""
    path = run_dir / INPUTS_FILE
    recorded = json.loads(path.read_text()) if path.is_file() else {}
    changes = {k: [recorded[k], v] for k, v in inputs.items() if k in recorded and recorded[k] != v}
    bound = [k for k in changes if k in _BOUND_INPUTS]
    listed = "; ".join(f"{key}: {old} -> {new}" for key, (old, new) in changes.items())
    if bound:
        raise InputError(
            f"{run_dir} holds a run whose checkpoint was trained with another tokenizer or starting run ({listed}): "
            "its corpus, tokenizer or starting run changed since it started. Restore them to resume it, or start "
            "afresh with resume=false (or another hydra.run.dir)"
        )
    if changes and not allowed:
        raise InputError(
            f"{run_dir} holds a run started on other data ({listed}): the corpus changed since it started. Restore "
            "it, pass allow_config_change=true to continue on the new data, or resume=false to start afresh"
        )
    return changes
