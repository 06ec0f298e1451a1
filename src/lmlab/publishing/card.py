"""The model card (README.md) of a Hugging Face export: what the run was, how it was made and how to load it.

Facts come from the run's MLflow record when its tracking store is reachable (command, data fingerprint, lineage,
final metrics) and otherwise from the export itself (objective, steps), and the card says which.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from lmlab.runs.export_dir import ExportedRun
from lmlab.tracking.identity import redact

if TYPE_CHECKING:
    from lmlab.publishing.hf import HFExport


def run_facts(run: ExportedRun, source: str, tracking_uri: str) -> dict[str, Any]:
    """What the run's MLflow record says: its command, tags (lineage, fingerprints) and final metrics."""
    facts: dict[str, Any] = {"source": source, "run_id": run.run_id, "tags": {}, "metrics": {}, "command": ""}
    if not run.run_id:
        facts["record"] = "the run was not tracked"
        return facts
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        record = MlflowClient(tracking_uri).get_run(run.run_id)
    except MlflowException as err:
        facts["record"] = f"run {run.run_id} is not in {redact(tracking_uri)}: {str(err).splitlines()[0]}"
        return facts
    tags = record.data.tags
    facts["record"] = f"MLflow run {run.run_id} in {redact(tracking_uri)}"
    facts["command"] = tags.get("lmlab.command", "")
    facts["tags"] = {k: v for k, v in sorted(tags.items()) if k.startswith("lmlab.") and k != "lmlab.command"}
    facts["metrics"] = {k: v for k, v in sorted(record.data.metrics.items()) if k.startswith(("val/", "test/"))}
    return facts


def model_card(run: ExportedRun, export: HFExport, pipeline_task: str, facts: dict[str, Any]) -> str:
    cfg = run.model_cfg
    tags = facts.get("tags", {})
    lineage = {
        k: v for k, v in tags.items() if k.startswith(("lmlab.pretrained", "lmlab.hf_", "lmlab.reward", "lmlab.parent"))
    }
    # A fine-tune was trained on a task; other stages on an objective.
    trained_on = (
        f"task: `{tags['lmlab.task']}` ({tags.get('lmlab.task_family', '?')})"
        if "lmlab.task" in tags
        else f"objective: `{run.objective_name}`"
    )
    remote = ", trust_remote_code=True" if export.trust_remote_code else ""
    metrics = "\n".join(f"| {k} | {v:.4g} |" for k, v in facts.get("metrics", {}).items())
    front = {
        "library_name": "transformers",
        "pipeline_tag": pipeline_task,
        "tags": ["lmlab", export.model_type, export.head if export.head != "base" else run.objective_name],
    }
    lines = [
        "---",
        *(f"{k}: {json.dumps(v)}" for k, v in front.items()),
        "---",
        "",
        f"# {export.model_class} exported from lmlab",
        "",
        f"An lmlab run ({facts.get('source', run.path)}) as a `transformers` {export.model_class}.",
        "",
        "```python",
        f"from transformers import {export.auto_class}, AutoTokenizer",
        f'model = {export.auto_class}.from_pretrained("<this directory>"{remote})',
        'tokenizer = AutoTokenizer.from_pretrained("<this directory>")',
        "```",
        "",
        "## How it was made",
        "",
        f"- {trained_on}; steps: {run.global_step}",
        f"- architecture: lmlab `model.layout={cfg.layout}`, {cfg.n_layers} layers, d_model {cfg.d_model}, "
        f"{cfg.n_heads} heads, vocabulary {cfg.vocab_size}, exported as `{export.model_type}`",
        f"- data fingerprint: `{tags.get('lmlab.data_fingerprint', 'not recorded')}`; tokenizer fingerprint: "
        f"`{run.tokenizer.fingerprint}`",
        f"- command: `{facts.get('command') or 'not recorded'}`",
        f"- record: {facts.get('record', 'none')}",
    ]
    if export.model_type == "llama" and cfg.dropout:
        lines.append(f"- Llama has no residual dropout: lmlab's `model.dropout={cfg.dropout}` is not in this export")
    lines += ["", "## Lineage", ""]
    lines += [f"- {k}: `{v}`" for k, v in lineage.items()] or ["- trained from scratch (no starting run recorded)"]
    lines += ["", "## Metrics at the end of the run", ""]
    lines += ["| metric | value |", "|---|---|", metrics] if metrics else ["not recorded"]
    if export.head == "base":
        lines += [
            "",
            f"The `{run.objective_name}` objective's head has no `transformers` class: this is the encoder alone "
            "(BERT's pooler, which lmlab does not train, is initialised by transformers).",
        ]
    return "\n".join(lines) + "\n"
