"""The MLflow model registry: an HF export logged into its run's MLflow record and registered under a name teams
pick models by in the UI.

The `pytorch` flavour is used: MLflow 3's `transformers` flavour does not load with transformers 5 (it reads
pipeline metadata transformers 5 no longer has). The model is logged as its transformers class (a sequence classifier
as lmlab's own class, importable wherever lmlab is), with the HF directory (config, tokenizer, card) beside it as
extra files, so `mlflow.pytorch.load_model("models:/<name>/<version>")` gives the transformers model back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmlab.errors import InputError
from lmlab.runs.export_dir import ExportedRun

if TYPE_CHECKING:
    from lmlab.publishing.hf import HFExport


def check_model_name(name: str) -> None:
    """Refuse a registry name MLflow would refuse, before anything is exported."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_name

    try:
        _validate_model_name(name)
    except MlflowException as err:
        raise InputError(f"register={name!r} is not a registry name MLflow accepts: {err.message}") from None


def register_model(export: HFExport, run: ExportedRun, name: str, tracking_uri: str) -> str:
    """Log `export` in a run of its own (tagged lmlab.kind=export and, for a tracked source, lmlab.source_run_id, in
    the source run's experiment) and register it as `name`; returns the new version. The source run's record is
    not touched: a record is changed only by the run it describes."""
    import mlflow
    import mlflow.pytorch
    import transformers

    from lmlab.hf import modeling_lmlab

    check_model_name(name)
    if export.trust_remote_code:
        model = getattr(modeling_lmlab, export.model_class).from_pretrained(str(export.path))
    else:
        model = getattr(transformers, export.auto_class).from_pretrained(str(export.path))
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    tags = {"lmlab.kind": "export", "lmlab.hf_export": str(export.path)}
    experiment_id = None
    if run.run_id:
        tags["lmlab.source_run_id"] = run.run_id
        experiment_id = client.get_run(run.run_id).info.experiment_id
    with mlflow.start_run(run_name=f"export-{name}", experiment_id=experiment_id, tags=tags):
        info = mlflow.pytorch.log_model(
            model.eval(),
            name="hf-model",
            # The whole module pickled: a traced pt2 graph would fix the input shapes.
            serialization_format="pickle",
            registered_model_name=name,
            extra_files=[str(p) for p in sorted(export.path.iterdir()) if p.is_file()],
        )
    return str(info.registered_model_version)
