"""Causal LM: the shift transform, causality checked by gradients, KV-cache decoding, and learning."""

from __future__ import annotations

import csv
from dataclasses import replace

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from lmlab.data.blocks import Block, example_rng
from lmlab.heads import IGNORE
from lmlab.models import Backbone
from lmlab.objectives import build_objective
from lmlab.pretraining.run import pretrain

from .conftest import TINY
from .test_backbone import SMALL

DECODER = replace(SMALL, layout="decoder")


def test_labels_are_the_next_tokens_and_padding_is_ignored(tokenizer):
    clm = build_objective({"name": "clm"}, tokenizer)
    pad = tokenizer.token_id("[PAD]")
    ids = np.array([7, 8, 9, 10, pad, pad])
    out = clm.transform(Block.of(ids, n_real=4), example_rng(0, 0, 0))
    assert np.array_equal(out["input_ids"], ids)
    assert out["labels"].tolist() == [8, 9, 10, IGNORE, IGNORE, IGNORE]


def _input_gradients(model: Backbone, ids: torch.Tensor, t: int, padding_mask=None, **forward_kwargs) -> torch.Tensor:
    """|d hidden[:, t] / d embeddings| per input position."""
    captured = {}

    def keep(module, inputs, output):
        output.retain_grad()
        captured["x"] = output

    handle = model.token_embedding.register_forward_hook(keep)
    hidden = model(ids, padding_mask, **forward_kwargs)[:, t]
    # a random projection: the plain sum of a LayerNorm output is identically zero
    (hidden * torch.randn(hidden.shape, generator=torch.Generator().manual_seed(t))).sum().backward()
    handle.remove()
    return captured["x"].grad.abs().sum(-1)[0]


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("knob", [{}, {"positions": "relative"}, {"mixer": "conv", "kernel_size": 3}])
def test_decoder_output_at_t_has_no_gradient_from_later_inputs(padded, knob):
    model = Backbone(replace(DECODER, **knob))
    ids = torch.randint(5, 100, (1, 12))
    mask = torch.ones(1, 12, dtype=torch.bool) if padded else None  # padded=True takes the explicit-mask path
    for t in (0, 5, 11):
        grad = _input_gradients(model, ids, t, mask)
        assert (grad[t + 1 :] == 0).all(), f"position {t} depends on later inputs"
        # a causal convolution sees (kernel - 1) positions back per layer
        window = t + 1 if "kernel_size" not in knob else (knob["kernel_size"] - 1) * SMALL.n_layers + 1
        assert (grad[max(0, t + 1 - window) : t + 1] > 0).all(), f"position {t} ignores earlier inputs"


@pytest.mark.parametrize("knob", [{}, {"positions": "relative"}, {"mixer": "conv", "kernel_size": 5}])
def test_encoder_output_depends_on_inputs_on_both_sides(knob):
    grad = _input_gradients(Backbone(replace(DECODER, layout="encoder", **knob)), torch.randint(5, 100, (1, 12)), 3)
    assert (grad[:7] > 0).all()  # conv: 2 layers of kernel 5 reach 4 positions either side


@pytest.mark.parametrize("norm_position", ["pre", "post"])
@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rotary", "relative", "conv"])
@pytest.mark.parametrize("chunk", [1, 3])
def test_kv_cache_decoding_matches_a_full_forward(norm_position, positions, chunk):
    knobs = {"mixer": "conv", "kernel_size": 4} if positions == "conv" else {"positions": positions}
    cfg = replace(DECODER, norm_position=norm_position, norm="rmsnorm", feed_forward="glu", **knobs)
    model = Backbone(cfg).eval()
    ids = torch.randint(5, 100, (2, 13))
    with torch.no_grad():
        full = model.output_projection(model(ids))
        cache = model.new_cache()
        steps = [model.output_projection(model(ids[:, i : i + chunk], cache=cache)) for i in range(0, 13, chunk)]
    assert cache.length == 13
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_cache_is_refused_for_the_encoder_and_beyond_max_positions():
    with pytest.raises(ValueError, match="decoder layout"):
        encoder = Backbone(replace(DECODER, layout="encoder"))
        encoder(torch.zeros(1, 2, dtype=torch.long), cache=encoder.new_cache())
    model = Backbone(DECODER)
    cache = model.new_cache()
    model(torch.zeros(1, 60, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="max_positions"):
        model(torch.zeros(1, 5, dtype=torch.long), cache=cache)


def test_clm_run_learns(compose_config, project):
    cfg = compose_config(
        *TINY, "objective=clm", "trainer.max_steps=150", "trainer.val_check_interval=50", "optim.lr=3e-3"
    )
    pretrain(cfg, project / "run")
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("lmlab").experiment_id])
    assert run.data.params["model.layout"] == "decoder" and run.data.tags["lmlab.objective"] == "clm"
    ppl = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val/ppl"))
    assert [s for s, _ in ppl] == [0, 50, 100, 150]  # the untrained model is validated first
    assert ppl[-1][1] < ppl[0][1] * 0.7, ppl


def test_llama_style_knobs_train(compose_config, project):
    """Rotary positions, RMSNorm and SwiGLU on the decoder: the run learns."""
    knobs = ["model.positions=rotary", "model.norm=rmsnorm", "model.feed_forward=glu", "model.activation=silu"]
    cfg = compose_config(
        *TINY,
        "objective=clm",
        *knobs,
        "trainer.max_steps=150",
        "trainer.val_check_interval=50",
        "optim.lr=3e-3",
        "logger=csv",
    )
    final = pretrain(cfg, project / "run")
    with open(next((project / "run" / "csv").glob("*/metrics.csv"))) as f:
        rows = list(csv.DictReader(f))
    ppl = [float(r["val/ppl"]) for r in rows if r.get("val/ppl")]
    assert len(ppl) == 4 and ppl[-1] < ppl[0] * 0.7, ppl
    assert final["val/ppl"] == pytest.approx(ppl[-1], rel=1e-4)
