"""`export.py`: a run's export written in another format (today: a Hugging Face model directory), optionally
registered in the MLflow model registry."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from lmlab.config_schema import choice
from lmlab.errors import InputError
from lmlab.runs.export_dir import load_export

log = logging.getLogger(__name__)

FORMATS = ("hf",)


@dataclass
class ExportConfig:
    """Schema of `export.py` (conf/export.yaml)."""

    run: str = "???"  # an export dir, a run output dir or an MLflow run id
    format: str = "hf"
    # The directory to write; empty: exported/<run id, or the run directory's name> under the project root.
    out: str = ""
    # A model registry name: the export is logged to the run's MLflow record and registered under it.
    register: str = ""
    tracking_uri: str = ""

    def validate(self) -> None:
        choice("format", self.format, FORMATS)


def export(c: ExportConfig) -> Path:
    """Write the run `c.run` as `c.format` and return the directory."""
    from lmlab.publishing.card import run_facts
    from lmlab.publishing.hf import export_hf
    from lmlab.publishing.registry import check_model_name, register_model

    c.validate()
    if c.register and not c.tracking_uri:
        raise InputError("register needs tracking_uri (the MLflow store holding the registry)")
    if c.register:
        check_model_name(c.register)
    run = load_export(c.run, c.tracking_uri or None)
    name = run.run_id or (run.path.parent.name if run.path.name == "export" else run.path.name)
    out = Path(c.out).expanduser() if c.out else Path(os.environ.get("LMLAB_ROOT", ".")) / "exported" / name
    if out.exists() and not out.is_dir():
        raise InputError(f"out={out} is a file, not a directory; name a new directory (nothing was written)")
    result = export_hf(run, out, run_facts(run, c.run, c.tracking_uri))
    remote = ", trust_remote_code=True" if result.trust_remote_code else ""
    log.info(
        "Wrote %s (%s) to %s: %s.from_pretrained(...%s)",
        result.model_class,
        result.model_type,
        out,
        result.auto_class,
        remote,
    )
    if c.register:
        version = register_model(result, run, c.register, c.tracking_uri)
        log.info("Registered %s version %s in %s", c.register, version, c.tracking_uri)
    return out
