"""trainer.strategy and trainer.num_nodes: what each builds, and FSDP refused on the CPU before anything runs."""

from __future__ import annotations

import pytest
from pytorch_lightning.strategies import DDPStrategy, FSDPStrategy
from torch.distributed.fsdp import ShardingStrategy

from lmlab.config_schema import parse
from lmlab.errors import InputError
from lmlab.models.blocks import TransformerBlock
from lmlab.objectives import build_objective
from lmlab.pretraining.config import TrainConfig
from lmlab.runs.config import FSDPConfig, TrainerConfig
from lmlab.runs.trainer import strategy


def test_fsdp_wraps_each_block_shards_as_asked_and_saves_full_state_dicts():
    t = TrainerConfig(accelerator="gpu", strategy="fsdp", fsdp=FSDPConfig(sharding="hybrid"))
    built = strategy(t)
    assert isinstance(built, FSDPStrategy) and built.sharding_strategy == ShardingStrategy.HYBRID_SHARD
    assert built.kwargs["auto_wrap_policy"]._module_classes == {TransformerBlock}
    assert built._state_dict_type == "full" and not built._activation_checkpointing_kwargs
    t.fsdp = FSDPConfig(sharding="full", activation_checkpointing=True)
    built = strategy(t)
    assert built.sharding_strategy == ShardingStrategy.FULL_SHARD
    assert built._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes == {TransformerBlock}


def test_ddp_looks_for_unused_parameters_only_where_an_objective_leaves_some(tokenizer):
    assert strategy(TrainerConfig(devices=2)) == "auto"
    assert strategy(TrainerConfig(devices=1), find_unused_parameters=True) == "auto"  # one process: no DDP
    several = strategy(TrainerConfig(devices=2), find_unused_parameters=True)
    assert isinstance(several, DDPStrategy) and several._ddp_kwargs["find_unused_parameters"]
    assert isinstance(strategy(TrainerConfig(strategy="ddp")), DDPStrategy)
    pairs = {"name": "mixture", "components": [{"name": "mlm", "weight": 1}, {"name": "sop", "weight": 1}]}
    assert build_objective(pairs, tokenizer).leaves_parameters_unused
    assert not build_objective({"name": "mlm"}, tokenizer).leaves_parameters_unused


def test_fsdp_on_the_cpu_and_bad_strategy_values_are_refused_by_name(compose_config):
    with pytest.raises(InputError, match=r"trainer.strategy=fsdp needs a GPU trainer .*'requires a GPU accelerator'"):
        parse(compose_config("trainer.strategy=fsdp"), TrainConfig)
    with pytest.raises(InputError, match="trainer.strategy"):
        parse(compose_config("trainer.strategy=deepspeed"), TrainConfig)
    with pytest.raises(InputError, match="trainer.fsdp.sharding"):
        parse(compose_config("trainer.fsdp.sharding=zero3"), TrainConfig)
    with pytest.raises(InputError, match="trainer.num_nodes must be >= 1"):
        parse(compose_config("trainer.num_nodes=0"), TrainConfig)
