"""Training tokens/s and MFU on a GPU, trained as `trainer=gpu` trains: bf16 autocast, torch.compile'd backbone, fused
AdamW, SDPA (flash) attention. `python experiments/gpu_benchmark.py --models base,gpt2_124m --objectives mlm,clm`.

Each model runs at its own shape (BERT-base at T=128, GPT-2-124M at T=1024) with the vocabulary of the model it
stands for, padded to a multiple of 64 for the tensor cores (30,528 and 50,304). A pair whose layouts do not match (an
encoder objective on GPT-2) is skipped. MFU is model FLOPs (the objective's own count: 3x the forward pass) per second
over the GPU's dense bf16 peak, the one training logs MFU over (`lmlab.callbacks.throughput.peak_flops`;
`--peak-tflops` for a GPU it does not know).

`--dry-run` runs the same code on the CPU at toy size (2 layers, 64 wide, batch 2, T=32, 2 steps, bf16 autocast,
compiled) and checks that every step's loss is finite: CI runs it, so the GPU path is known to work before a GPU is.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import torch
from throughput import measure, print_table

from lmlab.callbacks.throughput import peak_flops
from lmlab.objectives import objective_class
from lmlab.pretraining.config import register_configs

# (block size, batch size, vocabulary) of each model, as it is trained
SHAPES = {"base": (128, 256, 30528), "gpt2_124m": (1024, 32, 50304)}
LAYOUTS = {"base": "encoder", "gpt2_124m": "decoder"}
TOY = ("model.n_layers=2", "model.d_model=64", "model.n_heads=2", "model.d_ff=128", "data.world.train_documents=200")


def peak_tflops(device: str, given: float | None) -> float | None:
    if given is not None:
        return given
    flops = peak_flops(torch.device(device), torch.bfloat16)
    return None if flops is None else flops / 1e12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="base,gpt2_124m")
    parser.add_argument("--objectives", default="mlm,clm")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, help="instead of each model's own")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--peak-tflops", type=float)
    parser.add_argument("--dry-run", action="store_true", help="on the CPU at toy size (CI)")
    args = parser.parse_args()
    device = "cpu" if args.dry_run else "cuda"
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("gpu_benchmark.py needs a CUDA GPU (torch sees none); --dry-run runs it on the CPU, toy-sized")
    register_configs()
    peak = peak_tflops(device, args.peak_tflops)
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for model in args.models.split(","):
            block, batch, vocab = SHAPES[model]
            for objective in args.objectives.split(","):
                if objective_class(objective).required_layout({"name": objective}) != LAYOUTS[model]:
                    continue
                if args.dry_run:
                    block, batch, steps, overrides = 32, 2, 2, TOY
                else:
                    batch, steps, overrides = args.batch_size or batch, args.steps, ()
                row = measure(
                    model, objective, device, batch, block, steps, Path(cache), overrides,
                    compile_backbone=not args.no_compile, bf16=True, vocab_size=vocab,
                )  # fmt: skip
                if not math.isfinite(row["loss"]):
                    raise SystemExit(f"{model} {objective}: the loss is {row['loss']}")
                row["MFU"] = f"{row['GFLOP/s'] / 1e3 / peak:.1%}" if peak else "n/a (peak unknown)"
                rows.append(row)
    if not rows:
        raise SystemExit(f"no model in {args.models} trains with an objective in {args.objectives}")
    print(f"device: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu (dry run)'}; peak {peak} TFLOP/s")
    print_table(rows)


if __name__ == "__main__":
    main()
