"""lmlab's one use of Hydra internals (lmlab/runs/hydra_guard.py): fail loudly if an upgrade moves it; the checks on
Hydra's own config node."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl

from lmlab.errors import InputError
from lmlab.runs.hydra_guard import check_hydra_node, check_no_passwords, displaying_only

from .conftest import ROOT


def test_the_composition_hook_lmlab_wraps_is_still_there():
    params = list(inspect.signature(ConfigLoaderImpl.load_configuration).parameters)
    assert params[:4] == ["self", "config_name", "overrides", "run_mode"], params
    # Sweep jobs are composed through it too (so each job's config is checked before its dir exists).
    assert "self.load_configuration(" in inspect.getsource(ConfigLoaderImpl.load_sweep_config)


def test_hydra_plugins_are_the_only_targets_hydra_may_instantiate():
    check_hydra_node({"launcher": {"_target_": "hydra_plugins.hydra_submitit_launcher.x.SlurmLauncher"}})
    for tree in (
        {"callbacks": {"a": {"_target_": "builtins.open"}}},
        {"launcher": {"params": {"_target_": "os.system"}}},
        {"sweeper": {"params": [{"_target_": "os.system"}]}},
    ):
        with pytest.raises(InputError, match="is not allowed: Hydra would instantiate it"):
            check_hydra_node(tree)


def test_logging_configs_use_logging_classes_and_append_only():
    check_hydra_node({"job_logging": {"handlers": {"file": {"class": "logging.FileHandler", "mode": "a"}}}})
    for tree in (
        {"job_logging": {"handlers": {"file": {"class": "logging.FileHandler", "mode": "w"}}}},
        {"hydra_logging": {"filters": {"f": {"()": "os.system"}}}},
        {"job_logging": {"handlers": {"h": {"class": "subprocess.Popen"}}}},
    ):
        with pytest.raises(InputError, match="is not allowed"):
            check_hydra_node(tree)


def test_a_uri_password_is_found_in_nested_values_and_lists_but_interpolations_pass():
    check_no_passwords({"logger": {"tracking_uri": "${oc.env:MLFLOW_TRACKING_URI,http://127.0.0.1:5001}"}})
    check_no_passwords({"logger": {"tracking_uri": "http://alice@host:5000"}})  # a user name alone is no secret
    with pytest.raises(InputError, match=r"^logger.tracking_uri holds a URI with a password") as refused:
        check_no_passwords({"logger": {"tracking_uri": "https://alice:pw@host"}})
    assert "pw" not in str(refused.value).replace("password", "")
    with pytest.raises(InputError, match=r"^hydra.overrides.task\[1\] holds"):
        check_no_passwords(["seed=1", "data.hub.path=s3://k:secret@bucket/x"], "hydra.overrides.task")


def test_help_and_config_display_are_not_refused_for_values_still_to_give():
    assert (
        displaying_only(["--help"]) and displaying_only(["run=x", "--cfg", "job"]) and displaying_only(["--info=all"])
    )
    assert not displaying_only(["run=x", "prompt=--help"]) and not displaying_only([])


@pytest.mark.parametrize("script", ["generate.py", "evaluate.py"])
def test_help_of_an_entry_point_with_required_values_prints_its_examples(script):
    done = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"python {script} run=<run>" in done.stdout
