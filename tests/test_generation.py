"""Decoding strategies against reference loops, logit filtering, and generate.py on trained runs."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from lmlab.generation import GenerationConfig, filter_logits, generate
from lmlab.models import Backbone
from lmlab.pretraining.run import pretrain

from .conftest import ROOT, TINY, run_env
from .test_backbone import SMALL

DECODER = replace(SMALL, layout="decoder", positions="rotary")


def _reference_greedy(model: Backbone, prompt: torch.Tensor, n: int, **kw) -> torch.Tensor:
    """Full forward passes, no cache."""
    ids = prompt
    for _ in range(n):
        prefix = kw.get("prefix")
        extra = {} if prefix is None else {"prefix_lengths": torch.tensor([prefix])}
        logits = model.output_projection(model(ids, **extra)[:, -1])
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids


def _logprob(model: Backbone, ids: torch.Tensor, prompt_len: int) -> float:
    logp = F.log_softmax(model.output_projection(model(ids)[:, :-1]), dim=-1)
    picked = logp.gather(-1, ids[:, 1:, None])[0, prompt_len - 1 :, 0]
    return float(picked.sum())


@pytest.fixture(scope="module")
def decoder() -> Backbone:
    torch.manual_seed(0)
    return Backbone(DECODER).eval()


def test_greedy_with_cache_matches_full_recomputation(decoder):
    prompt = torch.randint(5, 100, (1, 4))
    out = generate(decoder, prompt, GenerationConfig(max_new_tokens=10))
    with torch.no_grad():
        assert torch.equal(out, _reference_greedy(decoder, prompt, 10))


def test_prefix_lm_greedy_reads_the_prompt_as_prefix():
    torch.manual_seed(1)
    model = Backbone(replace(SMALL, layout="prefix_lm")).eval()
    prompt = torch.randint(5, 100, (1, 5))
    out = generate(model, prompt, GenerationConfig(max_new_tokens=6))
    with torch.no_grad():
        assert torch.equal(out, _reference_greedy(model, prompt, 6, prefix=5))


def test_top_k_one_sampling_and_single_beam_equal_greedy(decoder):
    prompt = torch.randint(5, 100, (1, 3))
    greedy = generate(decoder, prompt, GenerationConfig(max_new_tokens=8))
    sampled = generate(
        decoder, prompt, GenerationConfig("sample", 8, top_k=1), generator=torch.Generator().manual_seed(3)
    )
    beam = generate(decoder, prompt, GenerationConfig("beam", 8, num_beams=1))
    assert torch.equal(sampled, greedy) and torch.equal(beam, greedy)


def test_beam_search_finds_a_sequence_at_least_as_likely_as_greedy(decoder):
    for seed in range(5):
        prompt = torch.randint(5, 100, (1, 3), generator=torch.Generator().manual_seed(seed))
        greedy = generate(decoder, prompt, GenerationConfig(max_new_tokens=6))
        beam = generate(decoder, prompt, GenerationConfig("beam", 6, num_beams=5))
        assert beam.shape == greedy.shape
        with torch.no_grad():
            assert _logprob(decoder, beam, 3) >= _logprob(decoder, greedy, 3) - 1e-5


def test_sampling_is_seeded_and_stops_at_the_stop_token(decoder):
    prompt = torch.randint(5, 100, (1, 3))
    cfg = GenerationConfig("sample", 20, temperature=1.5)
    a = generate(decoder, prompt, cfg, generator=torch.Generator().manual_seed(7))
    b = generate(decoder, prompt, cfg, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    stop = int(a[0, 5])
    stopped = generate(decoder, prompt, cfg, stop_id=stop, generator=torch.Generator().manual_seed(7))
    assert int(stopped[0, -1]) == stop and stopped.shape[1] <= 6


def test_filter_logits_keeps_top_k_and_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(filter_logits(logits, 2, 1.0)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, 0, 0.8)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, 0, 0.81)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(filter_logits(logits, 0, 0.4)).tolist() == [[True, False, False, False]]


def test_encoder_decoder_greedy_matches_full_recomputation_and_beam_is_at_least_as_likely():
    torch.manual_seed(2)
    model = Backbone(replace(SMALL, layout="encoder_decoder", positions="relative")).eval()
    source = torch.randint(5, 100, (1, 7))
    out = generate(model, source, GenerationConfig(max_new_tokens=8), start_id=3)
    with torch.no_grad():
        memory = model(source)
        ids = torch.tensor([[3]])
        for _ in range(8):
            logits = model.output_projection(model.decode(ids, memory)[:, -1])
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)

        def logprob(seq: torch.Tensor) -> float:
            logp = F.log_softmax(model.output_projection(model.decode(seq[:, :-1], memory)), dim=-1)
            return float(logp.gather(-1, seq[:, 1:, None]).sum())

        assert torch.equal(out, ids)
        beam = generate(model, source, GenerationConfig(strategy="beam", num_beams=4, max_new_tokens=8), start_id=3)
        assert beam.shape == ids.shape and logprob(beam) >= logprob(ids) - 1e-4
    with pytest.raises(ValueError, match="start_id"):
        generate(model, source, GenerationConfig())


def test_encoder_runs_and_bad_settings_are_refused():
    with pytest.raises(ValueError, match="needs model.layout in"):
        generate(Backbone(SMALL), torch.zeros(1, 2, dtype=torch.long), GenerationConfig())
    with pytest.raises(ValueError, match="strategy='nucleus'"):
        generate(Backbone(DECODER), torch.zeros(1, 2, dtype=torch.long), GenerationConfig(strategy="nucleus"))


def test_generate_py_continues_a_prompt_from_an_export_dir_and_an_mlflow_run(compose_config, project):
    pretrain(compose_config(*TINY, "objective=clm", "trainer.max_steps=30"), project / "run")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("lmlab").experiment_id])
    for target in (project / "run", run.info.run_id):
        cmd = [
            sys.executable,
            "generate.py",
            f"run={target}",
            "prompt='she works for'",
            "generation.max_new_tokens=5",
            "generation.strategy=beam",
        ]
        done = subprocess.run(cmd, cwd=ROOT, env=run_env(project), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        line = done.stdout.strip().splitlines()[-1]
        assert line.startswith("she works for") and len(line.split()) > 3, line


def test_generate_py_fills_a_sentinel_with_a_span_run(compose_config, project):
    pretrain(compose_config(*TINY, "objective=span", "trainer.max_steps=30", "logger=csv"), project / "run")
    cmd = [
        sys.executable,
        "generate.py",
        f"run={project / 'run'}",
        "prompt='she works for [SPAN0] in the city.'",
        "generation.max_new_tokens=6",
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=run_env(project), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    line = done.stdout.strip().splitlines()[-1]
    prompt = "she works for [SPAN0] in the city."
    assert line.startswith(prompt) and line[len(prompt) :].split()[0] == "[SPAN0]", line
