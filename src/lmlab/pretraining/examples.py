"""A few decoded training examples, saved with every run so a researcher can see what the objective asks."""

from __future__ import annotations

import numpy as np

from lmlab.data.blocks import PackedBlocks, example_rng
from lmlab.data.tokenizer import TrainedTokenizer
from lmlab.heads import IGNORE
from lmlab.objectives import Objective


def describe_examples(
    objective: Objective, blocks: PackedBlocks, tokenizer: TrainedTokenizer, seed: int, n: int = 3
) -> str:
    """The first `n` training blocks after the objective's transform (epoch 0), as text."""
    tok = tokenizer.tokenizer
    parts = []
    for index in range(min(n, len(blocks))):
        example = objective.transform(blocks[index], example_rng(seed, 0, index))
        labels = example.get("labels")
        token_keys = [key for key in example if key.endswith("input_ids")]
        lines = [f"== example {index} =="]
        lines += [
            f"{key}: " + " ".join(tok.id_to_token(int(i)) or f"<{int(i)}>" for i in example[key]) for key in token_keys
        ]
        if labels is not None:
            where = np.flatnonzero(labels != IGNORE)
            lines.append("targets: " + " ".join(f"{p}:{tok.id_to_token(int(labels[p]))}" for p in where))
        lines += [f"{key}: {value.tolist()}" for key, value in example.items() if key not in (*token_keys, "labels")]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"
