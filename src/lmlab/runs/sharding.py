"""trainer.strategy=fsdp: PyTorch's FSDP2 (`fully_shard`) under Lightning's ModelParallelStrategy.

Why FSDP2 and not Lightning's FSDPStrategy (FSDP1): FSDPStrategy refuses the CPU ("requires a GPU accelerator"),
so the sharded path a GPU cluster runs could never be run by the tests. FSDP2 under ModelParallelStrategy runs on
gloo as on NCCL, so the code tested here is the code an 8-GPU job runs.

How a run is sharded:
- Only rank 0 builds the model for real (on the CPU); every other rank builds it on the meta device, so a large
  model is materialised once per job, not once per rank (`built_for`).
- `shard` makes each `TransformerBlock` one FSDP unit and the whole LightningModule the root unit (its `forward`
  runs the objective, so every parameter outside the blocks is gathered for the step), moves the shards to the
  rank's device and fills them from rank 0's weights by a broadcast. Every rank thus starts from exactly the
  weights a one-process or DDP run with the same seed starts from.
- Checkpoints hold full (unsharded) state dicts, written by rank 0 as any run's are; exports gather the full
  weights (`full_state`), so every reader of checkpoints and exports is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from itertools import chain
from typing import Any

import torch
import torch.distributed as dist
from pytorch_lightning.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard

from lmlab.runs.config import FSDPConfig


def fsdp_strategy() -> ModelParallelStrategy:
    """Lightning's strategy for FSDP2; the module shards itself in `configure_model` (see `shard`). Checkpoints are
    full state dicts (written by rank 0 through the run's CheckpointIO), not per-rank directories."""
    return ModelParallelStrategy(save_distributed_checkpoint=False)


@dataclass
class Sharding:
    """How a module of a sharded run shards itself once the processes are up (`shard`)."""

    cfg: FSDPConfig
    num_nodes: int
    lead: bool  # rank 0: the one rank whose modules hold real weights before sharding

    @property
    def builds_on_meta(self) -> bool:
        return not self.lead


@contextmanager
def built_for(sharding: Sharding | None) -> Iterator[None]:
    """Build modules on the meta device (shapes, no storage) on the ranks other than 0 of a sharded run."""
    with torch.device("meta") if sharding is not None and sharding.builds_on_meta else nullcontext():
        yield


def is_sharded(module: nn.Module) -> bool:
    return isinstance(module, FSDPModule)


def shard(module: nn.Module, unit: type[nn.Module], sharding: Sharding, device: torch.device) -> None:
    """Shard `module` in place: one FSDP unit per `unit` submodule, `module` itself the root, over every rank of the
    job (`full`, `grad_op`) or within each node and replicated across nodes (`hybrid`). Rank 0's weights (the only
    real ones) are broadcast into every rank's shards, and its buffers (position tables) into every rank's."""
    mesh = _mesh(sharding.cfg.sharding, sharding.num_nodes, device.type)
    weights = module.state_dict() if sharding.lead else {}
    reshard = sharding.cfg.sharding != "grad_op"  # grad_op keeps gathered parameters from forward to backward
    for sub in module.modules():
        if isinstance(sub, unit):
            fully_shard(sub, mesh=mesh, reshard_after_forward=reshard)
    fully_shard(module, mesh=mesh, reshard_after_forward=reshard)
    for sub in module.modules():  # storage, on the rank's device, for what was built on the meta device
        if any(t.is_meta for t in chain(sub.parameters(recurse=False), sub.buffers(recurse=False))):
            sub.to_empty(device=device, recurse=False)
    set_model_state_dict(module, weights, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    for buffer in module.buffers():  # whole on every rank; non-persistent ones are in no state dict
        dist.broadcast(buffer, src=0)


def full_state(module: nn.Module) -> dict[str, Any]:
    """The whole (unsharded) state dict on the CPU: on rank 0; {} on the others. A collective: every rank calls it."""
    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _mesh(sharding: str, num_nodes: int, device_type: str) -> DeviceMesh:
    world = dist.get_world_size()
    if sharding == "hybrid":  # Lightning starts the same number of processes on every node
        return init_device_mesh(device_type, (num_nodes, world // num_nodes), mesh_dim_names=("replicate", "shard"))
    return init_device_mesh(device_type, (world,), mesh_dim_names=("shard",))
