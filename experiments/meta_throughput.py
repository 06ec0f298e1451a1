"""Meta-learning step cost: `python experiments/meta_throughput.py [--device cuda] [--model tiny] [--steps 20]`.

Times one outer step (tasks_per_step episodes of 5-way 5-shot, 10 queries per class, synthetic topic terms) of each
algorithm, and a plain supervised step (encoder + linear head, forward + backward + AdamW) on the same examples, and
prints meta-steps/s and each algorithm's overhead over the plain step: the price of the functional inner loop.
A second table does the same for a decoder over text domains (MetaGPT: people episodes, 4 support + 2 query
documents), against a plain causal-LM step on the same documents.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from lmlab.data.config import DataConfig
from lmlab.data.corpus import build_corpus
from lmlab.data.tokenizer import load_or_train_tokenizer
from lmlab.meta.algorithms import MetaAlgorithm, algorithm_class
from lmlab.meta.domains import DomainConfig, DomainEpisodes
from lmlab.meta.episodes import ClassEpisodes, Episode, EpisodeConfig
from lmlab.meta.learners import Classifier, LanguageModel
from lmlab.models import Backbone, ModelConfig
from lmlab.pretraining.config import register_configs
from lmlab.runs.config import OptimConfig
from lmlab.runs.optim import build_optimizer

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LMLAB_ROOT", str(ROOT))
# name, settings: what each row times
ROWS = [
    ("maml (head, 5 steps)", "maml", {}),
    ("maml (top block, 5 steps)", "maml", {"adapt": "top_k_blocks"}),
    ("maml (all, 5 steps)", "maml", {"adapt": "all"}),
    ("fomaml (all, 5 steps)", "fomaml", {"adapt": "all"}),
    ("reptile (top block, 5 steps)", "reptile", {"inner_lr": 0.01}),
    ("multitask", "multitask", {}),
    ("protonet", "protonet", {}),
]
DOMAIN_ROWS = [
    ("maml (all, 3 steps)", "maml", {"adapt": "all", "inner_steps": 3}),
    ("fomaml (all, 3 steps)", "fomaml", {"adapt": "all", "inner_steps": 3}),
    ("reptile (all, 3 steps)", "reptile", {"adapt": "all", "inner_steps": 3}),
    ("multitask (plain causal LM)", "multitask", {"adapt": "all"}),
]


def model_config(name: str, vocab_size: int) -> ModelConfig:
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"model={name}"])
    fields = {k: v for k, v in dict(cfg.model).items() if k in ModelConfig.__dataclass_fields__}
    return ModelConfig(**{**fields, "vocab_size": vocab_size})


def timed(step: Callable[[], None], steps: int, device: torch.device) -> float:
    for _ in range(2):  # warm-up
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def meta_step(algorithm: MetaAlgorithm, episodes: list[Episode]) -> Callable[[], None]:
    outer = build_optimizer(algorithm, OptimConfig())

    def step() -> None:
        outer.zero_grad()
        algorithm.meta_gradients(episodes)
        outer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--tasks-per-step", type=int, default=4)
    args = parser.parse_args()
    device = torch.device(args.device)
    data = DataConfig()
    cache = ROOT / ".cache"
    tokenizer = load_or_train_tokenizer(build_corpus(data, cache / "hf"), data.tokenizer, cache)
    cfg = EpisodeConfig()
    source = ClassEpisodes(cfg, tokenizer)
    pools = source.pools
    episodes = [source.episode(0, "train", i).to(device) for i in range(args.tasks_per_step)]
    model_cfg = model_config(args.model, tokenizer.vocab_size)

    encoder = Classifier(Backbone(model_cfg), "head", 1).to(device)
    head = torch.nn.Linear(model_cfg.d_model, cfg.n_way).to(device)
    optimiser = build_optimizer(torch.nn.ModuleList([encoder, head]), OptimConfig())

    def plain_step() -> None:
        optimiser.zero_grad()
        for episode in episodes:
            batch = episode.whole()
            (F.cross_entropy(head(encoder(batch)), batch["label"]) / len(episodes)).backward()
        optimiser.step()

    plain = timed(plain_step, args.steps, device)
    print(
        f"{args.model} on {device}: {args.tasks_per_step} episodes per step, {len(episodes[0].whole()['label'])} "
        f"examples each; plain supervised step {plain * 1000:.1f} ms\n"
    )
    table(ROWS, model_cfg, pools.train, episodes, "classes", plain, args.steps, device)

    domains = DomainEpisodes(DomainConfig(), tokenizer)
    episodes = [domains.episode(0, "train", i).to(device) for i in range(args.tasks_per_step)]
    decoder_cfg = replace(model_cfg, layout="decoder")
    lm = LanguageModel(Backbone(decoder_cfg), "all", 1).to(device)
    optimiser = build_optimizer(lm, OptimConfig())

    def plain_lm_step() -> None:
        optimiser.zero_grad()
        for episode in episodes:
            (lm(episode.whole()).loss / len(episodes)).backward()
        optimiser.step()

    plain = timed(plain_lm_step, args.steps, device)
    tokens = int(episodes[0].whole()["padding_mask"].sum())
    print(f"\nMetaGPT, people domains: about {tokens} tokens per episode; plain causal-LM step {plain * 1000:.1f} ms\n")
    table(DOMAIN_ROWS, decoder_cfg, domains.pools.train, episodes, "domains", plain, args.steps, device)


def table(
    rows: list,
    model_cfg: ModelConfig,
    train: list[str],
    episodes: list[Episode],
    kind: str,
    plain: float,
    steps: int,
    device: torch.device,
) -> None:
    print("| algorithm | ms / meta-step | meta-steps/s | × plain step |")
    print("|---|---|---|---|")
    for label, name, settings in rows:
        cls = algorithm_class(name)
        algorithm = cls(cls.parse_config({"name": name, **settings}), Backbone(model_cfg), train, kind).to(device)
        seconds = timed(meta_step(algorithm, episodes), steps, device)
        print(f"| {label} | {seconds * 1000:.1f} | {1 / seconds:.2f} | {seconds / plain:.1f} |")


if __name__ == "__main__":
    main()
