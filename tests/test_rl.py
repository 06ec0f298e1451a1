"""RL fine-tuning: rollouts and their log-probabilities (padded = unpadded), the KL estimators, each algorithm's
advantages, the rewards and prompts, the module (the reference never changes; KL starts at 0) and rl.py end to end
(tracked run, completions table, export as a causal LM, exact resume, refusals before anything is written)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from lmlab.callbacks.nonfinite import NonFiniteLossError
from lmlab.data.tokenizer import CLS, PAD, SEP, TrainedTokenizer
from lmlab.errors import InputError
from lmlab.generation import Stepper
from lmlab.models import Backbone, ModelConfig
from lmlab.rl.algorithms import algorithm_class
from lmlab.rl.competition import ELO_ANCHOR, elo_ratings, judge, win_rate
from lmlab.rl.config import register_rl_configs
from lmlab.rl.kl import adapted_kl_coef, kl_per_token
from lmlab.rl.module import ELO_FILE, RLModule
from lmlab.rl.prompts import Prompt, PromptConfig, read_prompts, split_held_out
from lmlab.rl.results import rl_table
from lmlab.rl.rewards import RewardContext, reward_class
from lmlab.rl.rollout import Rollouts, sample, token_scores
from lmlab.rl.run import rl
from lmlab.runs.config import OptimConfig
from lmlab.runs.export_dir import load_export, write_export

from .conftest import CONF

register_rl_configs()


def tiny_decoder(vocab: int, seed: int = 0, layout: str = "decoder") -> Backbone:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        vocab_size=vocab, layout=layout, n_layers=2, d_model=32, n_heads=2, d_ff=64, max_positions=64, dropout=0.0
    )
    return Backbone(cfg).eval()


def algorithm(name: str, **settings):
    cls = algorithm_class(name)
    return cls(cls.parse_config({"name": name, **settings}))


def make_reward(name: str, context: RewardContext | None = None, **settings):
    cls = reward_class(name)
    return cls(cls.parse_config({"name": name, **settings}), context)  # type: ignore[arg-type]


LAYOUTS = ("decoder", "prefix_lm", "encoder_decoder")


def sample_rollouts(tokenizer: TrainedTokenizer, layout: str, seed: int = 0) -> tuple[Backbone, Rollouts]:
    backbone = tiny_decoder(tokenizer.vocab_size, layout=layout)
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    generator = torch.Generator().manual_seed(seed)
    end, pad, start = tokenizer.token_id(SEP), tokenizer.token_id(PAD), tokenizer.token_id(CLS)
    return backbone, sample(
        backbone,
        prompts,
        3,
        max_new_tokens=6,
        temperature=1.0,
        end_id=end,
        pad_id=pad,
        generator=generator,
        start_id=start,
    )


@pytest.fixture(scope="module", params=LAYOUTS)
def rollouts(request, tokenizer: TrainedTokenizer) -> tuple[Backbone, Rollouts]:
    return sample_rollouts(tokenizer, request.param)


# --- rollouts and scores -----------------------------------------------------------------------------------------


def test_rollouts_hold_each_prompt_group_times_and_mark_the_completions(rollouts):
    _, out = rollouts
    assert out.ids.shape[0] == 9 and out.group == 3
    assert out.ids[0, :3].tolist() == [5, 6, 7] and out.ids[3, :2].tolist() == [8, 9]
    assert not out.completion_mask[:, :2].any()  # prompts are never completion tokens
    assert bool((out.completion_mask <= out.padding_mask).all())
    assert all(1 <= len(c) <= 6 for c in out.completions(drop_end=False))


def test_padded_log_probs_equal_each_row_scored_alone(rollouts):
    """One padded forward gives every completion token the log-probability it has in its own unpadded forward."""
    backbone, out = rollouts
    batch = token_scores(backbone, out)
    for i in range(out.ids.shape[0]):
        n = int(out.padding_mask[i].sum())
        alone = Rollouts(
            out.ids[i : i + 1, :n],
            out.padding_mask[i : i + 1, :n],
            out.completion_mask[i : i + 1, :n],
            out.ended[i : i + 1],
            1,
            out.prompt_lengths[i : i + 1],
        )
        single = token_scores(backbone, alone)
        torch.testing.assert_close(batch.logprobs[i, : n - 1], single.logprobs[0], atol=1e-5, rtol=1e-5)
        assert bool((batch.logprobs[i, n - 1 :] == 0).all())


def test_scored_log_probs_are_those_the_sampler_drew_from(rollouts, tokenizer):
    """Each completion token's score equals its log-probability when generation drew it, step by step with the
    layout's own decoding (KV cache, prefix recomputation, encoder memory): sampling and scoring see one policy."""
    backbone, out = rollouts
    batch = token_scores(backbone, out)
    for i in range(out.ids.shape[0]):
        prompt_len, row = int(out.prompt_lengths[i]), out.ids[i][out.padding_mask[i]]
        completion = out.ids[i][out.completion_mask[i]]
        step = Stepper(backbone, row[None, :prompt_len])
        ids = row[None, : prompt_len + (1 if backbone.cfg.layout == "encoder_decoder" else 0)]
        if backbone.cfg.layout == "encoder_decoder":
            ids = ids[:, prompt_len:]  # the decoder starts from its start token
        logits, drawn = step(ids), []
        for token in completion.tolist():
            drawn.append(torch.log_softmax(logits[0], -1)[token])
            ids = torch.cat([ids, torch.tensor([[token]])], 1)
            logits = step(torch.tensor([[token]]), ids)
        scored = batch.logprobs[i][out.targets[i]]
        torch.testing.assert_close(scored, torch.stack(drawn), atol=1e-5, rtol=1e-5)


def test_sampling_is_a_function_of_the_generator_seed(tokenizer, rollouts):
    backbone, out = rollouts
    again = sample_rollouts(tokenizer, backbone.cfg.layout)[1]
    assert torch.equal(again.ids, out.ids) and not torch.equal(
        sample_rollouts(tokenizer, backbone.cfg.layout, 1)[1].ids, out.ids
    )


def test_a_completion_stops_at_the_end_token_which_it_keeps():
    vocab, end, pad = 12, 3, 0
    backbone = tiny_decoder(vocab)
    project = backbone.output_projection
    favour_end = torch.zeros(vocab)
    favour_end[end] = 100.0  # the end token all but certain
    backbone.output_projection = lambda hidden: project(hidden) + favour_end  # type: ignore[method-assign]
    out = sample(
        backbone,
        [[5, 6]],
        2,
        max_new_tokens=5,
        temperature=1.0,
        end_id=end,
        pad_id=pad,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.ended.all() and out.completions() == [[], []] and out.completions(drop_end=False) == [[end], [end]]


# --- KL and advantages -------------------------------------------------------------------------------------------


def test_kl_is_zero_when_policy_and_reference_agree_and_k3_is_never_negative():
    logp = torch.log(torch.tensor([0.2, 0.5, 0.9]))
    for estimator in ("k1", "k3"):
        assert torch.equal(kl_per_token(logp, logp, estimator), torch.zeros(3))
    ref = torch.log(torch.tensor([0.4, 0.1, 0.9]))
    assert bool((kl_per_token(logp, ref, "k3") >= 0).all())
    assert kl_per_token(logp, ref, "k1").tolist()[0] < 0  # k1 can be negative at a single token


def test_grpo_advantages_are_zero_when_a_group_agrees_and_normalised_otherwise():
    adv = algorithm("grpo").advantages(torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]]))
    assert torch.equal(adv[0], torch.zeros(3))
    assert adv[1].mean().abs() < 1e-6 and adv[1, 1] > 0 > adv[1, 0]


def test_the_rloo_baseline_excludes_the_sample_itself():
    rewards = torch.tensor([[1.0, 0.0, 0.5, 0.5]])
    adv = algorithm("rloo").advantages(rewards)
    assert adv[0, 0] == pytest.approx(1.0 - (0.0 + 0.5 + 0.5) / 3)
    changed = rewards.clone()
    changed[0, 0] = 7.0
    # A sample's own reward moves its advantage one for one: it is not in its baseline.
    assert algorithm("rloo").advantages(changed)[0, 0] - adv[0, 0] == pytest.approx(6.0)


def test_reinforce_uses_the_batch_mean_and_group_methods_need_a_group():
    adv = algorithm("reinforce").advantages(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    assert adv.tolist() == [[0.75, -0.25], [-0.25, -0.25]]
    for name in ("rloo", "grpo"):
        with pytest.raises(InputError, match=f"rl={name} .*rl.group"):
            algorithm(name, group=1)


def test_the_clipped_loss_stops_pushing_once_the_ratio_leaves_the_trust_region():
    grpo = algorithm("grpo", updates_per_batch=2, clip_eps=0.2)
    old = torch.zeros(1, 1)
    mask = torch.ones(1, 1, dtype=torch.bool)
    far = torch.full((1, 1), 0.5, requires_grad=True)  # ratio e^0.5 > 1.2
    grpo.policy_loss(far, old, torch.ones(1), mask).backward()
    assert far.grad is not None and float(far.grad) == 0.0
    near = torch.zeros(1, 1, requires_grad=True)
    grpo.policy_loss(near, old, torch.ones(1), mask).backward()
    assert near.grad is not None and float(near.grad) == -1.0


# --- rewards and prompts -----------------------------------------------------------------------------------------


def test_rewards_score_completions():
    keyword = make_reward("keyword", words=["proud"])
    assert keyword.score([Prompt("a")] * 3, ["she was proud.", "a proudly made", "PROUD"], [True] * 3) == [
        1.0,
        0.0,
        1.0,
    ]
    facts = make_reward("facts")
    prompt = Prompt("Ana Lo works for", "Cormo Labs")
    assert facts.score([prompt] * 3, ["cormo labs, founded", "cormolabs", "unbri observatory"], [False] * 3) == [
        1.0,
        1.0,
        0.0,
    ]
    with pytest.raises(InputError, match="reward=facts checks each prompt's answer; 1 prompt"):
        facts.check_prompts([prompt, Prompt("no answer here")])
    with pytest.raises(InputError, match="reward=keyword needs reward.words"):
        reward_class("keyword").parse_config({"name": "keyword", "words": []})
    length = make_reward("length", target=4)
    assert length.score([Prompt("a")] * 4, ["one two three four", "one two", "", " ".join(["w"] * 9)], [True] * 4) == [
        1.0,
        0.5,
        0.0,
        0.0,
    ]
    eos = make_reward("eos")
    assert eos.score([Prompt("a")] * 2, ["done", "cut off"], [True, False]) == [1.0, 0.0]
    assert keyword.lineage() == {}


def test_synthetic_prompts_are_people_with_their_employer_split_disjointly():
    prompts = read_prompts(PromptConfig())
    assert len(prompts) == 300 and prompts[0].text.endswith(" works for") and prompts[0].answer
    train, held_out = split_held_out(prompts, 0.2, 0)
    assert len(held_out) == 60 and not {p.text for p in train} & {p.text for p in held_out}


def test_a_prompt_file_is_read_or_refused_naming_the_line(tmp_path):
    good = tmp_path / "prompts.jsonl"
    good.write_text('{"prompt": "Ana works for", "answer": "X"}\n\n{"prompt": "Bo is"}\n')
    assert read_prompts(PromptConfig(source="file", file=str(good))) == [Prompt("Ana works for", "X"), Prompt("Bo is")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt key"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: each line needs a non-empty \"prompt\" string"):
        read_prompts(PromptConfig(source="file", file=str(bad)))


# --- rl.py end to end ----------------------------------------------------------------------------------------------


@pytest.fixture
def policy_export(tmp_path: Path, tokenizer: TrainedTokenizer) -> Path:
    """An untrained tiny decoder exported as a causal LM run (the machinery does not need a good policy)."""
    backbone = tiny_decoder(tokenizer.vocab_size)
    metadata = {"objective": json.dumps({"name": "clm"}), "global_step": "0", "run_id": ""}
    return write_export(
        tmp_path / "policy", torch.nn.ModuleDict({"backbone": backbone}), backbone.cfg, tokenizer, metadata, {}
    )


TOY = [
    "rl.prompts_per_step=2",
    "rl.group=2",
    "rl.max_new_tokens=4",
    "eval.samples=2",
    "eval.lm_batches=2",
    "prompts.eval_fraction=0.02",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "data.world.train_documents=300",
    "data.world.validation_documents=40",
    "data.block_size=32",
]


def compose_rl(policy: Path, *overrides: str):
    """The toy settings of the algorithm's kind (sampling settings for reward algorithms, pairs per step for DPO)."""
    toy = [o for o in TOY if not o.startswith("rl.")] + ["rl.pairs_per_step=4"] if "rl=dpo" in overrides else TOY
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("rl", overrides=[*toy, f"policy={policy}", *overrides])


def _runs(root: Path):
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    return client, client.search_runs([client.get_experiment_by_name("lmlab").experiment_id])


def test_an_rl_run_is_tracked_with_its_completions_and_exported_as_a_causal_lm(project, policy_export):
    metrics = rl(compose_rl(policy_export, "rl=rloo"), project / "run")
    client, [run] = _runs(project)
    assert run.info.status == "FINISHED"
    assert run.data.tags["lmlab.kind"] == "rl" and run.data.tags["lmlab.rl"] == "rloo"
    assert run.data.tags["lmlab.policy_run"] == str(policy_export)
    for name in ("reward", "reward_std", "kl", "entropy", "completions/mean_length", "completions/eos_frac"):
        assert f"train/{name}" in run.data.metrics and f"val/{name}" in run.data.metrics
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/reward")) == [0, 1, 2, 3]
    # The starting policy is evaluated at step 0, then every trainer.val_check_interval steps.
    val_steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/reward"))
    assert len(val_steps) == 3 and val_steps[0] == 0
    assert (project / "run" / "completions" / "step0.jsonl").exists()
    assert {"lm/loss", "lm/loss_reference", "lm/loss_ratio"} <= set(metrics)
    table = [json.loads(line) for line in (project / "run" / "completions" / "step4.jsonl").read_text().splitlines()]
    assert table and {"prompt", "completions", "rewards"} <= set(table[0]) and len(table[0]["completions"]) == 2
    assert "completions/step4.jsonl" in {a.path for a in client.list_artifacts(run.info.run_id, "completions")}
    exported = load_export(str(project / "run"))
    assert exported.objective_name == "clm" and exported.global_step == 4
    table = rl_table(client, [run]).splitlines()
    assert table[0].startswith("| algorithm | seeds | held-out reward at step 0") and table[2].startswith(
        "| rloo | 1 |"
    )
    assert "| win rate vs reference | Elo at the end |" in table[0] and "not logged" not in table[2]


@pytest.mark.parametrize(
    ("layout", "objective", "rl_name"),
    [("prefix_lm", "prefix_lm", "grpo"), ("encoder_decoder", "span", "online_dpo"), ("encoder_decoder", "ul2", "dpo")],
)
def test_prefix_lm_and_encoder_decoder_policies_train_and_export_as_runs_of_their_objective(
    project, tmp_path, tokenizer, pairs_file, layout, objective, rl_name
):
    backbone = tiny_decoder(tokenizer.vocab_size, layout=layout)
    metadata = {"objective": json.dumps({"name": objective}), "global_step": "0", "run_id": ""}
    policy = write_export(
        tmp_path / "policy", torch.nn.ModuleDict({"backbone": backbone}), backbone.cfg, tokenizer, metadata, {}
    )
    extra = (
        [f"preferences={pairs_file}", "prompts.eval_fraction=0.1"]
        if rl_name == "dpo"
        else ["reward=length", "reward.target=2"]
    )
    metrics = rl(compose_rl(policy, f"rl={rl_name}", *extra), project / "run")
    _, [run] = _runs(project)
    assert run.info.status == "FINISHED" and run.data.tags["lmlab.policy_objective"] == objective
    assert math.isfinite(metrics["lm/loss"]) and math.isfinite(metrics["lm/loss_reference"])
    exported = load_export(str(project / "run"))
    assert exported.objective_name == objective and exported.model_cfg.layout == layout and exported.global_step == 4


def test_the_reference_never_changes_and_kl_starts_at_zero(project, policy_export):
    exported = load_export(str(policy_export))
    conf = compose_rl(policy_export)
    reward = make_reward("facts")
    module = RLModule(
        exported.backbone(),
        algorithm("grpo", group=2, max_new_tokens=4),
        reward=reward,
        tokenizer=exported.tokenizer,
        optim_cfg=OptimConfig(),
        max_steps=4,
        clip=0.0,
        seed=0,
        eval_cfg=conf.eval,
        completions_dir=None,
        mode_token=None,
    )
    module.eval()  # as training_step and validation see the policy (no dropout)
    prompts = read_prompts(PromptConfig())[:2]
    out, rewards, _ = module.rollouts(prompts, 2, [0, 0])
    assert float(module.measured(out, rewards, *module.scored(out))["kl"]) == 0.0
    before = {k: v.clone() for k, v in module.reference.state_dict().items()}
    optimiser = torch.optim.SGD(module.policy.parameters(), lr=1.0)
    for _ in range(2):
        optimiser.zero_grad()
        token_scores(module.policy, out).logprobs.sum().backward()
        optimiser.step()
    assert all(torch.equal(v, before[k]) for k, v in module.reference.state_dict().items())
    assert float(module.measured(out, rewards, *module.scored(out))["kl"]) > 0
    module.train()
    assert module.policy.training and not module.reference.training
    with pytest.raises(NonFiniteLossError, match="the training loss is nan at step 0; stopping without saving"):
        module.update(torch.tensor(float("nan")))  # before any optimiser step could take it into the weights


def test_an_encoder_policy_and_a_too_long_generation_are_refused_before_anything_is_written(
    project, tmp_path, tokenizer
):
    encoder = tiny_decoder(tokenizer.vocab_size, layout="encoder")
    metadata = {"objective": json.dumps({"name": "mlm"}), "global_step": "0", "run_id": ""}
    mlm = write_export(
        tmp_path / "mlm", torch.nn.ModuleDict({"backbone": encoder}), encoder.cfg, tokenizer, metadata, {}
    )
    with pytest.raises(
        InputError, match=r"is an encoder run \(mlm\), which predicts masked tokens; RL fine-tuning samples completions"
    ):
        rl(compose_rl(mlm), project / "run")
    policy = write_export(
        tmp_path / "p",
        torch.nn.ModuleDict({"backbone": tiny_decoder(tokenizer.vocab_size)}),
        tiny_decoder(tokenizer.vocab_size).cfg,
        tokenizer,
        {**metadata, "objective": json.dumps({"name": "clm"})},
        {},
    )
    with pytest.raises(InputError, match=r"\+ rl.max_new_tokens=60 = \d+ positions exceeds the policy's model.max_pos"):
        rl(compose_rl(policy, "rl.max_new_tokens=60"), project / "run")
    assert not (project / "run").exists() and not (project / "mlflow.db").exists()


def test_a_resumed_rl_run_samples_and_logs_exactly_what_an_uninterrupted_one_does(project, policy_export):
    adaptive = ("rl.kl_target=0.001", "rl.kl_horizon=4")  # the KL coefficient is state too: +-20% a step here
    rl(compose_rl(policy_export, "experiment=straight", *adaptive), project / "straight")
    rl(compose_rl(policy_export, "experiment=cut", *adaptive, "trainer.max_steps=2"), project / "cut")
    rl(compose_rl(policy_export, "experiment=cut", *adaptive, "allow_config_change=true"), project / "cut")
    client, runs = _runs(project)
    by_experiment = {r.data.params["experiment"]: r for r in runs}
    assert by_experiment["cut"].data.tags["lmlab.resumed_from_step"] == "2"

    def series(run, name: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, name))

    for name in ("train/reward", "train/kl", "train/completions/mean_length", "train/kl_coef"):
        straight, resumed = series(by_experiment["straight"], name), series(by_experiment["cut"], name)
        assert [s for s, _ in resumed] == [s for s, _ in straight] == [0, 1, 2, 3]
        assert [v for _, v in resumed] == pytest.approx([v for _, v in straight], rel=1e-5, abs=1e-7)
    assert len({v for _, v in series(by_experiment["straight"], "train/kl_coef")}) == 4
    # The evaluations before the cut come back with the checkpoint: the Elo fit after it sees all of them.
    for name in ("val/win_rate", "val/elo"):
        straight, resumed = series(by_experiment["straight"], name), series(by_experiment["cut"], name)
        assert [s for s, _ in resumed] == [s for s, _ in straight] and len(straight) == 3
        assert [v for _, v in resumed] == pytest.approx([v for _, v in straight], rel=1e-5, abs=1e-7)
    elo = project / "cut" / "completions" / ELO_FILE
    assert elo.read_text() == (project / "straight" / "completions" / ELO_FILE).read_text()


def test_a_resume_from_a_policy_that_changed_since_is_refused(project, policy_export, tokenizer):
    """The KL reference is rebuilt from the policy run on resume: a run extended since would be another reference."""
    rl(compose_rl(policy_export, "trainer.max_steps=2"), project / "run")
    changed = tiny_decoder(tokenizer.vocab_size)
    with torch.no_grad():
        next(changed.parameters()).add_(1.0)
    metadata = {"objective": json.dumps({"name": "clm"}), "global_step": "5", "run_id": ""}
    write_export(policy_export, torch.nn.ModuleDict({"backbone": changed}), changed.cfg, tokenizer, metadata, {})
    with pytest.raises(InputError, match="trained with another tokenizer or starting run .*start_weights"):
        rl(compose_rl(policy_export, "trainer.max_steps=4", "allow_config_change=true"), project / "run")


def test_the_rl_benchmark_prints_rollout_and_update_costs(policy_export, tmp_path):
    import subprocess
    import sys

    from .conftest import ROOT

    cmd = [sys.executable, "experiments/rl_throughput.py", "--policy", str(policy_export), "--prompts", "2"]
    cmd += ["--group", "2", "--max-new-tokens", "4", "--repeats", "1"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "ms / step" not in line]
    assert [r.split(" | ")[0] for r in rows] == [
        "| rollout (sampling, KV cache)",
        "| scoring + update (reference and policy forwards, backward, AdamW)",
        "| whole step",
    ]
    assert "tokens/s" in rows[0] and rows[2].endswith("| 100% |")


# --- DPO -----------------------------------------------------------------------------------------------------------


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    import subprocess
    import sys

    from .conftest import ROOT

    path = tmp_path / "pairs.jsonl"
    cmd = [sys.executable, "experiments/synthetic_pairs.py", "--out", str(path)]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=120)
    return path


def test_the_dpo_loss_at_initialisation_is_ln_2_and_ipo_s_is_its_target_squared():
    chosen = rejected = torch.zeros(5)  # the policy is the reference: every implicit reward is 0
    assert float(algorithm("dpo").loss(chosen, rejected)) == pytest.approx(math.log(2))
    assert float(algorithm("dpo", loss="ipo", beta=0.1).loss(chosen, rejected)) == pytest.approx(25.0)
    assert float(algorithm("dpo").loss(torch.tensor([3.0]), torch.tensor([-3.0]))) < 0.01


def test_a_dpo_run_learns_from_pairs_and_starts_at_ln_2(project, policy_export, pairs_file):
    rl(compose_rl(policy_export, "rl=dpo", f"preferences={pairs_file}", "prompts.eval_fraction=0.1"), project / "run")
    client, [run] = _runs(project)
    assert run.info.status == "FINISHED" and run.data.tags["lmlab.reward"] == "preferences"
    history = {
        name: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, f"val/{name}"))
        for name in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")
    }
    assert history["loss"][0] == (0, pytest.approx(math.log(2), abs=1e-6))  # step 0: the policy is the reference
    assert history["rewards/margins"][0][1] == 0.0 and history["rewards/accuracies"][0][1] == 0.0
    assert len(history["loss"]) == 3 and "train/rewards/margins" in run.data.metrics


def test_preference_settings_are_refused_where_they_would_be_ignored_or_missing(project, policy_export, pairs_file):
    with pytest.raises(InputError, match="rl=dpo learns from preference pairs: set preferences=<pairs.jsonl>"):
        rl(compose_rl(policy_export, "rl=dpo"), project / "run")
    with pytest.raises(InputError, match="would be ignored: rl=grpo samples completions"):
        rl(compose_rl(policy_export, "rl=grpo", f"preferences={pairs_file}"), project / "run")
    bad = pairs_file.parent / "bad.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": "b"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: \['rejected'\] missing or empty"):
        rl(compose_rl(policy_export, "rl=dpo", f"preferences={bad}"), project / "run")
    assert not (project / "run").exists()


def test_a_reward_override_of_a_dpo_run_is_refused_before_anything_is_written(tmp_path, policy_export, pairs_file):
    import subprocess
    import sys

    from .conftest import ROOT, run_env

    cmd = [sys.executable, "rl.py", "rl=dpo", f"policy={policy_export}", f"preferences={pairs_file}"]
    cmd += ["reward=keyword", "logger=none"]
    done = subprocess.run(cmd, cwd=ROOT, env=run_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "['reward=keyword'] would be ignored: rl=dpo learns from preferences= pairs" in done.stderr
    assert "Traceback" not in done.stderr and not any(p.is_file() for p in (tmp_path / "outputs").rglob("*"))


# --- a classifier run as the reward model --------------------------------------------------------------------------


@pytest.fixture
def classifier_run(tmp_path: Path, tokenizer: TrainedTokenizer) -> Path:
    """A classification fine-tuning export (as finetune.py writes one): backbone, head, labels, task config."""
    from lmlab.tasks.classification import ClassificationHead

    backbone = tiny_decoder(tokenizer.vocab_size, layout="encoder")
    weights = torch.nn.ModuleDict({"backbone": backbone, "head": ClassificationHead(32, 2, 0.0)})
    labels = ["negative", "positive"]
    config = "task:\n  family: classification\n  name: synthetic_sentiment\n  max_length: 32\n"
    texts = {"labels.json": json.dumps(labels), "config.yaml": config}
    return write_export(tmp_path / "sentiment", weights, backbone.cfg, tokenizer, {"labels": json.dumps(labels)}, texts)


def test_a_classifier_run_rewards_the_probability_of_its_label(classifier_run, tokenizer, tmp_path):
    context = RewardContext(tokenizer, None, tmp_path)
    reward = make_reward("classifier", context, run=str(classifier_run), label="positive")
    negative = make_reward("classifier", context, run=str(classifier_run), label="negative")
    prompts = [Prompt("Ana works for"), Prompt("Bo said that he was")]
    completions = ["cormo labs.", "delighted about the festival."]
    ended = [True] * len(completions)
    scores, others = reward.score(prompts, completions, ended), negative.score(prompts, completions, ended)
    assert all(0 < s < 1 for s in scores) and scores != [scores[0]] * 2
    assert [a + b for a, b in zip(scores, others, strict=True)] == pytest.approx([1.0, 1.0])
    assert reward.lineage() == {"lmlab.reward_run": str(classifier_run)}  # tagged on the RL run


def test_a_reward_run_that_does_not_fit_the_policy_is_refused_by_name(classifier_run, tokenizer, tmp_path):
    other = TrainedTokenizer(tokenizer.tokenizer, "0123456789abcdef", tokenizer.path)
    with pytest.raises(InputError, match="reads text with tokenizer .* the policy writes it with 0123456789abcdef"):
        make_reward("classifier", RewardContext(other, None, tmp_path), run=str(classifier_run), label="positive")
    context = RewardContext(tokenizer, None, tmp_path)
    with pytest.raises(InputError, match=r"reward.label='happy' is not a label of .*\['negative', 'positive'\]"):
        make_reward("classifier", context, run=str(classifier_run), label="happy")
    (classifier_run / "config.yaml").write_text("task:\n  family: token_classification\n")
    with pytest.raises(
        InputError, match="is not a classification fine-tuning run \\(task.family=token_classification\\)"
    ):
        make_reward("classifier", context, run=str(classifier_run), label="positive")


# --- competition: the judge, win rate, Elo, online DPO ---------------------------------------------------------------


def test_the_adaptive_kl_coefficient_moves_toward_its_target_at_most_20_percent_per_horizon():
    assert adapted_kl_coef(0.1, 0.2, 0.1, 100, 100) == pytest.approx(0.12)  # 100% over target: clipped to +20%
    assert adapted_kl_coef(0.1, 0.09, 0.1, 100, 100) == pytest.approx(0.09)  # 10% under: -10%
    assert adapted_kl_coef(0.1, 0.0, 0.1, 32, 10000) == pytest.approx(0.1 * (1 - 0.2 * 32 / 10000))
    with pytest.raises(InputError, match="rl.kl_target must be > 0"):
        algorithm("grpo", kl_target=0.0)
    with pytest.raises(InputError, match="it needs rl.kl_coef > 0"):
        algorithm("grpo", kl_target=0.1, kl_coef=0.0)


def test_the_judge_prefers_the_higher_reward_and_a_tie_counts_half():
    a, b = torch.tensor([1.0, 0.0, 0.5, 0.2]), torch.tensor([0.0, 1.0, 0.5, 0.1])
    assert judge(a, b).tolist() == [1.0, 0.0, 0.5, 1.0]
    assert win_rate(a, b) == pytest.approx(2.5 / 4) and win_rate(a, a) == 0.5


def test_elo_is_the_bradley_terry_fit_anchored_at_the_first_checkpoint():
    reference = torch.zeros(10)
    better = torch.tensor([1.0] * 8 + [-1.0] * 2)  # wins 8 of 10 matches against the reference
    ratings = elo_ratings([reference, better])
    # Two players: the fit is the record itself, with the virtual tie (8.5 wins of 11 games).
    assert ratings[0] == ELO_ANCHOR
    assert ratings[1] - ratings[0] == pytest.approx(400 * math.log10(8.5 / 2.5), abs=1e-6)
    assert elo_ratings([reference, reference.clone()]) == pytest.approx([ELO_ANCHOR, ELO_ANCHOR])
    # A clean sweep stays finite, and a checkpoint that beats the one that beat the reference is rated above both.
    best = torch.full((10,), 2.0)
    swept = elo_ratings([reference, better, best])
    assert all(math.isfinite(r) for r in swept) and swept[0] < swept[1] < swept[2]
    assert elo_ratings([reference]) == [ELO_ANCHOR]


def test_online_dpo_is_configured_as_a_sampling_algorithm_of_pairs(project, policy_export):
    assert float(algorithm("online_dpo").loss(torch.zeros(3), torch.zeros(3))) == pytest.approx(math.log(2))
    with pytest.raises(InputError, match="rl.group must be >= 2"):
        algorithm("online_dpo", group=1)
    with pytest.raises(InputError, match=r"rl.loss='hinge' is not supported; expected one of"):
        algorithm("online_dpo", loss="hinge")
    with pytest.raises(InputError, match="kl_coef"):  # a reward algorithm's setting is not silently ignored
        rl(compose_rl(policy_export, "rl=online_dpo", "+rl.kl_coef=0.1"), project / "run")
    assert not (project / "run").exists()


def test_an_online_dpo_run_is_judged_against_the_reference_and_its_checkpoints_get_elo(project, policy_export):
    metrics = rl(compose_rl(policy_export, "rl=online_dpo", "reward=length", "reward.target=2"), project / "r")
    client, [run] = _runs(project)
    assert run.info.status == "FINISHED" and run.data.tags["lmlab.rl"] == "online_dpo"

    def history(name: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, name))

    # Step 0: the policy is the reference, so every match ties and the loss of its pairs is ln 2.
    assert history("val/win_rate")[0] == (0, 0.5) and history("val/elo")[0] == (0, ELO_ANCHOR)
    assert len(history("val/elo")) == 3
    assert [s for s, _ in history("train/pairs/decided_frac")] == [0, 1, 2, 3]
    decided_steps = [s for s, v in history("train/pairs/decided_frac") if v > 0]
    assert decided_steps and history("train/loss")[0][0] == decided_steps[0]
    assert history("train/loss")[0][1] == pytest.approx(math.log(2), abs=1e-5)
    assert "train/kl" in run.data.metrics and "val/reward" in run.data.metrics
    table = json.loads((project / "r" / "completions" / ELO_FILE).read_text())
    assert [row["step"] for row in table] == [0, 2, 4] and table[0]["elo"] == ELO_ANCHOR
    assert table[-1]["win_rate_vs_reference"] == pytest.approx(metrics["val/win_rate"], abs=1e-6)
    assert f"completions/{ELO_FILE}" in {a.path for a in client.list_artifacts(run.info.run_id, "completions")}


def test_self_play_meets_the_reference_and_its_newest_snapshots_and_resumes_exactly(project, policy_export):
    settings = ("rl=selfplay", "reward=length", "reward.target=2", "rl.pool_every=1", "rl.pool_size=2")
    rl(compose_rl(policy_export, *settings, "experiment=straight"), project / "straight")
    rl(compose_rl(policy_export, *settings, "experiment=cut", "trainer.max_steps=2"), project / "cut")
    rl(compose_rl(policy_export, *settings, "experiment=cut", "allow_config_change=true"), project / "cut")
    client, runs = _runs(project)
    by_experiment = {r.data.params["experiment"]: r for r in runs}

    def series(run, name: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, name))

    opponents = series(by_experiment["straight"], "train/opponent_step")
    assert [s for s, _ in opponents] == [0, 1, 2, 3]
    # At step s the pool holds the reference and the snapshots after updates s - 1 and s (pool_size=2).
    assert all(o == 0 or s - 1 <= o <= s for s, o in opponents)
    assert opponents[0][1] == 0  # nothing pooled yet: the reference
    # The pool comes back with the checkpoint: the resumed run draws and meets the same opponents.
    for name in ("train/opponent_step", "train/win_rate_vs_opponent", "train/reward", "train/pairs/decided_frac"):
        straight, resumed = series(by_experiment["straight"], name), series(by_experiment["cut"], name)
        assert [s for s, _ in resumed] == [s for s, _ in straight] == [0, 1, 2, 3]
        assert [v for _, v in resumed] == pytest.approx([v for _, v in straight], rel=1e-5, abs=1e-7)
    with pytest.raises(InputError, match="rl.pool_every must be >= 1"):
        algorithm("selfplay", pool_every=0)


# --- a kind added as one module: RAFT (src/lmlab/rl/algorithms/raft.py, conf/rl/raft.yaml) ------------------------


def test_raft_learns_from_each_groups_best_completion(project, policy_export, monkeypatch):
    """The step's loss is the NLL of the best-rewarded completion of every group whose rewards differ: with a reward
    that prefers one completion per group, the policy's log-probability of exactly those rises."""
    from lmlab.rl.algorithms.raft import RAFT

    honest = RAFT.step
    seen: list[float] = []

    def watched(self, module, prompts):
        honest(self, module, prompts)
        seen.append(float(module.trainer.callback_metrics["train/kept_frac"]))

    monkeypatch.setattr(RAFT, "step", watched)
    metrics = rl(compose_rl(policy_export, "rl=raft", "rl.group=3", "reward=length"), project / "run")
    client, [run] = _runs(project)
    assert run.info.status == "FINISHED" and run.data.tags["lmlab.rl"] == "raft"
    assert len(seen) == 4 and all(0.0 <= k <= 1.0 for k in seen) and max(seen) > 0
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss")) == [0, 1, 2, 3]
    assert math.isfinite(metrics["lm/loss"]) and "val/reward" in metrics


def test_raft_refuses_a_group_it_cannot_rank():
    with pytest.raises(InputError, match="rl=raft keeps the best of a prompt's group: rl.group must be >= 2, got 1"):
        algorithm("raft", group=1)


def test_raft_step_is_the_nll_of_the_best_completion(tokenizer):
    """On fixed rollouts: the rows kept are each group's argmax where the group's rewards differ."""
    from types import SimpleNamespace

    from lmlab.rl.algorithms.raft import RAFT
    from lmlab.rl.rollout import token_scores

    policy, out = sample_rollouts(tokenizer, "decoder")
    prompts = read_prompts(PromptConfig())[:3]
    rewards = torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.5, 0.5], [0.0, 0.0, 2.0]])  # winners: rows 1 and 8; a tie
    logged: dict = {}
    updates: list[torch.Tensor] = []
    module = SimpleNamespace(
        seed=0,
        global_step=0,
        device=torch.device("cpu"),
        policy=policy,
        reference=policy,
        rollouts=lambda *args: (out, rewards, []),
        update=updates.append,
        lr_schedulers=lambda: SimpleNamespace(step=lambda: None),
        measured=lambda *args: {},
        log_dict=lambda metrics, **kw: logged.update(metrics),
    )
    RAFT(algorithm("raft", group=3).cfg).step(module, prompts)  # type: ignore[arg-type]
    scores = token_scores(policy, out)
    mask = out.targets[[1, 8]]
    expected = -(scores.logprobs[[1, 8]] * mask).sum() / mask.sum()
    assert float(updates[0]) == pytest.approx(float(expected), rel=1e-5)
    assert float(logged["train/kept_frac"]) == pytest.approx(2 / 3)
