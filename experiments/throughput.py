"""Training throughput per model size and objective:
`python experiments/throughput.py [--device cuda] [--models tiny,small,base] [--objectives mlm,clm,span]`.

Times forward + backward + AdamW steps on synthetic-world blocks (no Lightning, no data loading) and
prints a table of real tokens/s, achieved TFLOP/s (from the objective's FLOPs count) and step time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lmlab.data.blocks import BlockDataset, collate
from lmlab.data.datamodule import PretrainDataModule
from lmlab.objectives import build_objective
from lmlab.pretraining.config import TrainConfig, register_configs
from lmlab.pretraining.module import PretrainModule
from lmlab.runs.optim import build_optimizer

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
# The configs find experiment presets under the project root, as train.py sets it.
os.environ.setdefault("LMLAB_ROOT", str(ROOT))


def measure(
    model: str,
    objective_name: str,
    device: str,
    batch_size: int,
    block_size: int,
    steps: int,
    cache: Path,
    overrides: tuple[str, ...] = (),
    compile_backbone: bool = False,
    bf16: bool | None = None,
    vocab_size: int | None = None,
) -> dict:
    """Step time of `model` trained on `objective_name`. `overrides` are config overrides; `vocab_size` sizes the
    embeddings and head as a real tokenizer would (the synthetic world's ids stay below its own vocabulary);
    bf16 autocast is on by default on CUDA."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                f"model={model}",
                f"objective={objective_name}",
                f"data.block_size={block_size}",
                f"data.batch_size={batch_size}",
                "data.world.train_documents=2000",
                *overrides,
            ],
        )
    conf: TrainConfig = OmegaConf.to_object(cfg)
    data = PretrainDataModule(conf.data, cache, seed=0)
    tokenizer = data.prepare()
    objective = build_objective(conf.objective, tokenizer)
    conf.model.vocab_size = max(vocab_size or 0, tokenizer.vocab_size)
    module = PretrainModule(objective, conf.model, conf.optim, max_steps=steps, compile_backbone=compile_backbone)
    module = module.to(device)
    module.configure_model()
    optimizer = build_optimizer(module, conf.optim)
    dataset = BlockDataset(data.blocks("train"), objective.transform, seed=0)
    rng = torch.Generator().manual_seed(0)

    def batch(number: int) -> dict[str, torch.Tensor]:
        picks = torch.randint(len(dataset) - 1, (batch_size,), generator=rng).tolist()
        return {k: v.to(device) for k, v in collate([dataset[(0, i, number)] for i in picks]).items()}

    batches = [batch(n) for n in range(4)]
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda" if bf16 is None else bf16)

    def step(b: dict[str, torch.Tensor]) -> torch.Tensor:
        with autocast:
            loss = module(b).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    for b in batches[:2]:
        step(b)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    flops = 0
    for i in range(steps):
        b = batches[i % len(batches)]
        loss = step(b)
        flops += objective.flops_per_batch(module.backbone, b)
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    n_params = sum(p.numel() for p in module.parameters())
    return {
        "model": model,
        "objective": objective_name,
        "params (M)": n_params / 1e6,
        "batch x block": f"{batch_size}x{block_size}",
        "tokens/s": steps * batch_size * block_size / elapsed,
        "GFLOP/s": flops / elapsed / 1e9,
        "loss": float(loss),
        "ms/step": 1000 * elapsed / steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="tiny,small,base")
    parser.add_argument("--objectives", default="mlm")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    register_configs()
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for model in args.models.split(","):
            for objective in args.objectives.split(","):
                rows.append(
                    measure(model, objective, args.device, args.batch_size, args.block_size, args.steps, Path(cache))
                )
    print(
        f"device: {args.device} ({torch.get_num_threads()} threads)"
        if args.device == "cpu"
        else f"device: {torch.cuda.get_device_name()}"
    )
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    """The rows as a Markdown table, floats to one decimal."""
    header = list(rows[0])
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(f"{v:,.1f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
