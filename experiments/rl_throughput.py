"""RL step cost: `python experiments/rl_throughput.py [--device cuda] [--policy outputs/default/objective=clm]`.

Times the parts of one RL step of a policy run (a fresh tiny decoder with --policy none): sampling
`--prompts` x `--group` completions of `--max-new-tokens` tokens with the KV cache, scoring them under the policy and
the reference in one padded forward each, and one optimiser update; prints rollout tokens/s, optimisation steps/s
and the share of a step spent generating.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lmlab.data.config import DataConfig
from lmlab.data.corpus import build_corpus
from lmlab.data.tokenizer import PAD, SEP, load_or_train_tokenizer
from lmlab.models import Backbone, ModelConfig
from lmlab.rl.algorithms import algorithm_class
from lmlab.rl.prompts import PromptConfig, read_prompts
from lmlab.rl.rollout import sample, token_scores
from lmlab.runs.config import OptimConfig
from lmlab.runs.optim import build_optimizer
from lmlab.runs.starting_point import load_run

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LMLAB_ROOT", str(ROOT))


def timed(step: Callable[[], object], repeats: int, device: torch.device) -> float:
    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--policy",
        default="none",
        help="a decoder run (dir, MLflow id or hf:<dir or hub name>), or none: a fresh tiny one",
    )
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.policy == "none":
        data = DataConfig()
        tokenizer = load_or_train_tokenizer(build_corpus(data, ROOT / ".cache" / "hf"), data.tokenizer, ROOT / ".cache")
        cfg = ModelConfig(vocab_size=tokenizer.vocab_size, layout="decoder", n_layers=4, d_model=128, n_heads=4)
        policy = Backbone(cfg)
    else:
        exported, _ = load_run(args.policy, None, ROOT / ".cache")
        policy, tokenizer = exported.backbone(), exported.tokenizer
    policy = policy.to(device).eval()
    reference = copy.deepcopy(policy).requires_grad_(False)
    prompts = [tokenizer.tokenizer.encode(p.text, add_special_tokens=False).ids for p in read_prompts(PromptConfig())]
    prompts = prompts[: args.prompts]
    end, pad = tokenizer.token_id(SEP), tokenizer.token_id(PAD)
    generator = torch.Generator(device=device).manual_seed(0)
    grpo = algorithm_class("grpo")(algorithm_class("grpo").parse_config({"name": "grpo", "group": args.group}))
    optimiser = build_optimizer(policy, OptimConfig())

    def rollout():
        return sample(
            policy,
            prompts,
            args.group,
            max_new_tokens=args.max_new_tokens,
            temperature=1.0,
            end_id=end,
            pad_id=pad,
            generator=generator,
        )

    out = rollout()

    def update() -> None:
        with torch.no_grad():
            token_scores(reference, out)
            old = token_scores(policy, out)
        optimiser.zero_grad()
        now = token_scores(policy, out)
        advantages = torch.randn(args.prompts, args.group, device=device)
        grpo.policy_loss(now.logprobs, old.logprobs, advantages, out.targets).backward()
        optimiser.step()

    generating, updating = timed(rollout, args.repeats, device), timed(update, args.repeats, device)
    tokens = int(out.lengths().sum())
    step = generating + updating
    size = sum(p.numel() for p in policy.parameters()) / 1e6
    print(f"{size:.1f}M-parameter policy on {device}: {args.prompts} prompts x {args.group} completions,")
    print(f"about {tokens} completion tokens per step\n")
    rows = [
        ("rollout (sampling, KV cache)", generating, f"{tokens / generating:.0f} tokens/s"),
        (
            "scoring + update (reference and policy forwards, backward, AdamW)",
            updating,
            f"{1 / updating:.2f} updates/s",
        ),
        ("whole step", step, f"{1 / step:.2f} steps/s"),
    ]
    print("| part | ms / step | throughput | share of a step |")
    print("|---|---|---|---|")
    for name, seconds, throughput in rows:
        print(f"| {name} | {seconds * 1000:.1f} | {throughput} | {seconds / step:.0%} |")


if __name__ == "__main__":
    main()
