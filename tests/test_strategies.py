"""trainer.strategy and trainer.num_nodes: what each builds; FSDP2 sharding in one process (the 2-process runs are in
tests/test_fsdp.py); FSDP refused for stages other than pretraining before anything runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
from pytorch_lightning.strategies import DDPStrategy, ModelParallelStrategy
from safetensors.torch import save_model
from torch.distributed.tensor import DTensor

from lmlab.config_schema import parse
from lmlab.data.tokenizer import TrainedTokenizer
from lmlab.errors import InputError
from lmlab.models import ModelConfig
from lmlab.objectives import build_objective
from lmlab.pretraining.config import TrainConfig
from lmlab.pretraining.module import PretrainModule
from lmlab.runs.config import FSDPConfig, OptimConfig, TrainerConfig
from lmlab.runs.sharding import Sharding, is_sharded
from lmlab.runs.trainer import strategy


def test_fsdp_is_model_parallel_with_full_state_dicts_in_checkpoints():
    built = strategy(TrainerConfig(strategy="fsdp"))
    assert isinstance(built, ModelParallelStrategy) and not built._save_distributed_checkpoint


@pytest.fixture
def one_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _module(tokenizer: TrainedTokenizer, sharding: Sharding | None, objective: str = "mlm") -> PretrainModule:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=2, d_ff=64, vocab_size=tokenizer.vocab_size)
    return PretrainModule(build_objective({"name": objective}, tokenizer), cfg, OptimConfig(), 10, sharding=sharding)


@pytest.mark.parametrize(
    ("objective", "fsdp"),
    [("mlm", FSDPConfig()), ("mlm", FSDPConfig("grad_op", activation_checkpointing=True)), ("electra", FSDPConfig())],
    ids=str,
)
def test_a_sharded_module_computes_the_loss_and_gradients_of_the_plain_one(
    synthetic_data, one_process_group, tmp_path, objective, fsdp
):
    """ELECTRA's head calls the backbone's methods outside its forward: the root unit (the whole module) gathers
    them for the step."""
    tokenizer = synthetic_data.tokenizer
    plain = _module(tokenizer, None, objective)
    sharded = _module(tokenizer, Sharding(fsdp, num_nodes=1, lead=True), objective)
    sharded.shard_onto(torch.device("cpu"))
    assert is_sharded(sharded) and all(is_sharded(b) for b in sharded.backbone.stack.blocks)
    assert all(isinstance(p, DTensor) for p in sharded.parameters())
    examples = [
        plain.objective.transform(synthetic_data.blocks("train")[i], np.random.default_rng(i)) for i in range(4)
    ]
    batch = {key: torch.as_tensor(np.stack([e[key] for e in examples])) for key in examples[0]}
    losses = []
    for module in (plain, sharded):
        torch.manual_seed(1)  # the same dropout masks (recomputed ones too, under activation checkpointing)
        losses.append(module(batch).loss)
    torch.testing.assert_close(losses[1], losses[0])
    for loss in losses:
        loss.backward()
    grads = {name: p.grad.full_tensor() for name, p in sharded.named_parameters()}
    for name, p in plain.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, msg=name)
    exported = sharded.exported_weights()
    save_model(exported, str(tmp_path / "model.safetensors"))  # no tensor shares a larger buffer
    whole = exported.state_dict()
    for name, tensor in plain.weights().state_dict().items():
        torch.testing.assert_close(whole[name], tensor, rtol=0, atol=0, msg=name)


def test_ranks_other_than_0_build_the_model_on_the_meta_device(tokenizer):
    on_meta = _module(tokenizer, Sharding(FSDPConfig(), num_nodes=1, lead=False))
    assert {p.device.type for p in on_meta.weights().parameters()} == {"meta"}
    assert {p.device.type for p in _module(tokenizer, Sharding(FSDPConfig(), 1, lead=True)).parameters()} == {"cpu"}


def test_ddp_looks_for_unused_parameters_only_where_an_objective_leaves_some(tokenizer):
    assert strategy(TrainerConfig(devices=2)) == "auto"
    assert strategy(TrainerConfig(devices=1), find_unused_parameters=True) == "auto"  # one process: no DDP
    several = strategy(TrainerConfig(devices=2), find_unused_parameters=True)
    assert isinstance(several, DDPStrategy) and several._ddp_kwargs["find_unused_parameters"]
    assert isinstance(strategy(TrainerConfig(strategy="ddp")), DDPStrategy)
    pairs = {"name": "mixture", "components": [{"name": "mlm", "weight": 1}, {"name": "sop", "weight": 1}]}
    assert build_objective(pairs, tokenizer).leaves_parameters_unused
    assert not build_objective({"name": "mlm"}, tokenizer).leaves_parameters_unused


def test_bad_strategy_values_are_refused_by_name(compose_config):
    parse(compose_config("trainer.strategy=fsdp"), TrainConfig)  # on the CPU too (finetune.py's: test_bad_inputs)
    with pytest.raises(InputError, match=r"trainer.strategy=fsdp does not train in trainer.precision=16-mixed .*bf16"):
        parse(compose_config("trainer.strategy=fsdp", "trainer.precision=16-mixed"), TrainConfig)
    with pytest.raises(InputError, match="trainer.strategy"):
        parse(compose_config("trainer.strategy=deepspeed"), TrainConfig)
    with pytest.raises(InputError, match="trainer.fsdp.sharding"):
        parse(compose_config("trainer.fsdp.sharding=zero3"), TrainConfig)
    with pytest.raises(InputError, match="trainer.num_nodes must be >= 1"):
        parse(compose_config("trainer.num_nodes=0"), TrainConfig)
