"""The MLflow model registry: an HF export logged into its run's MLflow record and registered under a name teams
pick models by in the UI.

The `pytorch` flavour is used: MLflow 3's `transformers` flavour does not load with transformers 5 (it reads
pipeline metadata transformers 5 no longer has). The model is logged as its transformers class (a sequence classifier
as lmlab's own class, importable wherever lmlab is), with the HF directory (config, tokenizer, card) beside it as
extra files, so `mlflow.pytorch.load_model("models:/<name>/<version>")` gives the transformers model back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmlab.runs.exports import ExportedRun

if TYPE_CHECKING:
    from lmlab.exporting.hf import HFExport


def register_model(export: HFExport, run: ExportedRun, name: str, tracking_uri: str) -> str:
    """Log `export` to the run's MLflow record (a new run tagged lmlab.kind=export when the run was not tracked) and
    register it as `name`; returns the new version."""
    import mlflow
    import mlflow.pytorch
    import transformers

    from lmlab.hf import modeling_lmlab

    if export.trust_remote_code:
        model = getattr(modeling_lmlab, export.model_class).from_pretrained(str(export.path))
    else:
        model = getattr(transformers, export.auto_class).from_pretrained(str(export.path))
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    started = (
        mlflow.start_run(run_id=run.run_id)
        if run.run_id
        else mlflow.start_run(run_name=f"export-{export.path.name}", tags={"lmlab.kind": "export"})
    )
    with started as active:
        info = mlflow.pytorch.log_model(
            model.eval(),
            name="hf-model",
            # The whole module pickled: a traced pt2 graph would fix the input shapes.
            serialization_format="pickle",
            registered_model_name=name,
            extra_files=[str(p) for p in sorted(export.path.iterdir()) if p.is_file()],
        )
        client.set_tag(active.info.run_id, "lmlab.hf_export", str(export.path))
    return str(info.registered_model_version)
