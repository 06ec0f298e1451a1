"""What a run needs to know about Slurm: how many GPUs to ask for, and Lightning's cluster plugin with its own
auto-requeue turned off. Requeueing belongs to submitit (USR2 -> checkpoint -> `scontrol requeue`); Lightning's
SLURM requeue listens on USR1 and would requeue the same job a second time."""

from __future__ import annotations

from typing import Any

from pytorch_lightning.plugins.environments import SLURMEnvironment

from lmlab.errors import InputError

GPU_ACCELERATORS = ("gpu", "cuda")


def gpus_per_node(accelerator: str, devices: Any) -> int:
    """`hydra.launcher.gpus_per_node` from the trainer settings: one GPU per device on a GPU trainer, else none."""
    if accelerator not in GPU_ACCELERATORS:
        return 0
    try:
        return int(devices)
    except (TypeError, ValueError):
        raise InputError(
            f"trainer.devices={devices!r} cannot size a Slurm job; give a number of GPUs per node "
            "(e.g. trainer.devices=4) or set hydra.launcher.gpus_per_node"
        ) from None


def cluster_plugins() -> list[SLURMEnvironment]:
    """Inside a Slurm job: Lightning's SLURM environment (ranks from srun) without its USR1 auto-requeue."""
    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []
