"""lmlab: pretrain Transformer language models with different self-supervised objectives."""

__version__ = "0.1.0"
