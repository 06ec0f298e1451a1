"""Backbone hyper-parameters: the schema of the `model` config group."""

from __future__ import annotations

from dataclasses import dataclass

from lmlab.config_schema import choice
from lmlab.errors import InputError

# encoder: bidirectional attention; decoder: causal attention (position t sees positions <= t);
# prefix_lm: bidirectional over each example's prefix, causal after it; encoder_decoder: a bidirectional
# encoder and a causal decoder (n_layers each, as in T5) that cross-attends to the encoder's output.
LAYOUTS = ("encoder", "decoder", "prefix_lm", "encoder_decoder")
NORM_POSITIONS = ("pre", "post")
ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu")
NORMS = ("layernorm", "rmsnorm")
# mlp: act(x W1) W2; glu: (act(x Wg) * x W1) W2 — GeGLU with gelu, SwiGLU with silu.
FEED_FORWARDS = ("mlp", "glu")
# learned and sinusoidal are added to the embeddings; rotary rotates queries and keys in every layer;
# relative is T5's learned per-head bias on bucketed query-key offsets, added to the attention scores.
POSITIONS = ("learned", "sinusoidal", "rotary", "relative")
# attention: multi-head self-attention; conv: lightweight convolution (Wu et al. 2019), depthwise with
# softmax-normalised kernels shared by the channels of a head — causal in decoders.
MIXERS = ("attention", "conv")


@dataclass
class ModelConfig:
    layout: str = "encoder"
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    d_ff: int = 512
    max_positions: int = 512
    dropout: float = 0.1
    attention_dropout: float = 0.1
    norm_position: str = "pre"
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    feed_forward: str = "mlp"
    activation: str = "gelu"
    positions: str = "learned"
    # RoPE's base wavelength (positions=rotary): 10000 as in RoFormer and Llama 2; Llama 3 uses 500000.
    rotary_base: float = 10000.0
    relative_buckets: int = 32
    relative_max_distance: int = 128
    mixer: str = "attention"
    kernel_size: int = 7
    # Additive biases in every linear layer and LayerNorm of the backbone (BERT, GPT-2); false drops them all
    # (Llama, T5). Heads keep theirs.
    bias: bool = True
    # Segment (token type) embeddings for sentence-pair inputs, as BERT; 0 = none.
    segments: int = 0
    tie_embeddings: bool = True
    init_std: float = 0.02
    # Filled from the trained tokenizer at run time; a value here is only a default for tests.
    vocab_size: int = 0

    def validate(self) -> None:
        """Raise ValueError naming the bad key and what was expected."""
        choice("model.layout", self.layout, LAYOUTS)
        choice("model.norm_position", self.norm_position, NORM_POSITIONS)
        choice("model.norm", self.norm, NORMS)
        choice("model.feed_forward", self.feed_forward, FEED_FORWARDS)
        choice("model.activation", self.activation, ACTIVATIONS)
        choice("model.positions", self.positions, POSITIONS)
        choice("model.mixer", self.mixer, MIXERS)
        for key in ("n_layers", "d_model", "n_heads", "d_ff", "max_positions", "kernel_size", "relative_buckets"):
            if getattr(self, key) < 1:
                raise InputError(f"model.{key} must be >= 1, got {getattr(self, key)}")
        if self.d_model % self.n_heads:
            raise InputError(f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})")
        if self.positions == "rotary" and (self.d_model // self.n_heads) % 2:
            raise InputError(
                f"model.positions=rotary needs an even head size; d_model/n_heads = {self.d_model // self.n_heads}"
            )
        if self.mixer == "conv":
            if self.layout == "prefix_lm":
                raise InputError(
                    "model.mixer=conv does not support model.layout=prefix_lm (a convolution is either causal or "
                    "bidirectional); use model.mixer=attention or another layout"
                )
            if self.positions in ("rotary", "relative"):
                raise InputError(
                    f"model.positions={self.positions} acts inside attention and does nothing with model.mixer=conv; "
                    "use model.positions=learned or sinusoidal"
                )
        if self.rotary_base <= 1.0:
            raise InputError(f"model.rotary_base must be > 1, got {self.rotary_base}")
        if self.segments < 0:
            raise InputError(f"model.segments must be >= 0, got {self.segments}")
        for key in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise InputError(f"model.{key} must be in [0, 1), got {getattr(self, key)}")
