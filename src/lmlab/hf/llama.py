"""Llama: a pre-norm decoder with RMSNorm, a SwiGLU (any gated activation) feed-forward and rotary positions.

lmlab rotates interleaved channel pairs (2i, 2i+1) of a head; HF's Llama rotates channel i with i + head/2. The
query and key projections' rows (weights and biases) are reordered per head, which leaves every score unchanged.
"""

from __future__ import annotations

from typing import Any

from lmlab.errors import InputError
from lmlab.hf.mapping import (
    ACTIVATIONS,
    Mapping,
    Rule,
    linear,
    require,
    rotary_halves,
    rotary_pairs,
    same,
)
from lmlab.models import ModelConfig

LAYOUT: dict[str, Any] = {
    "layout": "decoder",
    "norm_position": "pre",
    "norm": "rmsnorm",
    "feed_forward": "glu",
    "positions": "rotary",
    "mixer": "attention",
    "segments": 0,
}


class Llama(Mapping):
    model_type = "llama"
    name = "Llama"
    layout = LAYOUT

    def hf_config(self, cfg: ModelConfig) -> dict[str, Any]:
        return {
            "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.d_model,
            "num_hidden_layers": cfg.n_layers,
            "num_attention_heads": cfg.n_heads,
            "num_key_value_heads": cfg.n_heads,
            "head_dim": cfg.d_model // cfg.n_heads,
            "intermediate_size": cfg.d_ff,
            "hidden_act": ACTIVATIONS[cfg.activation],
            "max_position_embeddings": cfg.max_positions,
            "rms_norm_eps": cfg.norm_eps,
            "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rotary_base},
            "attention_bias": cfg.bias,
            "mlp_bias": cfg.bias,
            "attention_dropout": cfg.attention_dropout,
            "initializer_range": cfg.init_std,
            "tie_word_embeddings": cfg.tie_embeddings,
        }

    def model_config(self, hf: dict[str, Any]) -> ModelConfig:
        heads = hf["num_attention_heads"]
        require(hf, "llama", "num_key_value_heads", heads, heads)
        require(hf, "llama", "head_dim", hf["hidden_size"] // heads, hf["hidden_size"] // heads)
        require(hf, "llama", "mlp_bias", hf.get("attention_bias", False), False)
        require(hf, "llama", "pretraining_tp", 1, 1)
        require(hf, "llama", "rope_scaling", None)
        rope = hf.get("rope_parameters") or {"rope_theta": hf.get("rope_theta", 10000.0)}
        if rope.get("rope_type", "default") != "default":
            raise InputError(
                f"llama config rope_parameters.rope_type={rope['rope_type']!r} (a scaled RoPE) has no lmlab "
                "counterpart; only 'default' maps"
            )
        return ModelConfig(
            **LAYOUT,
            n_layers=hf["num_hidden_layers"],
            d_model=hf["hidden_size"],
            n_heads=heads,
            d_ff=hf["intermediate_size"],
            max_positions=hf["max_position_embeddings"],
            # Llama has no residual dropout; lmlab's stays off.
            dropout=0.0,
            attention_dropout=hf.get("attention_dropout", 0.0),
            norm_eps=hf.get("rms_norm_eps", 1e-6),
            activation=self.activation(hf.get("hidden_act", "silu"), "hidden_act"),
            rotary_base=float(rope.get("rope_theta", 10000.0)),
            bias=hf.get("attention_bias", False),
            tie_embeddings=hf.get("tie_word_embeddings", False),
            init_std=hf.get("initializer_range", 0.02),
            vocab_size=hf["vocab_size"],
        )

    def rules(self, cfg: ModelConfig) -> list[Rule]:
        rules = [Rule("token_embedding.weight", ("embed_tokens.weight",)), *linear("stack.final_norm", "norm", False)]
        for i in range(cfg.n_layers):
            ours, theirs = f"stack.blocks.{i}.", f"layers.{i}."
            attention = theirs + "self_attn."
            rules += [
                *linear(ours + "norms.0", theirs + "input_layernorm", False),
                *linear(
                    ours + "mixer.qkv",
                    (attention + "q_proj", attention + "k_proj", attention + "v_proj"),
                    cfg.bias,
                    out=(rotary_halves, rotary_halves, same),
                    back=(rotary_pairs, rotary_pairs, same),
                ),
                *linear(ours + "mixer.out", attention + "o_proj", cfg.bias),
                *linear(ours + "norms.1", theirs + "post_attention_layernorm", False),
                *linear(ours + "ff.gate", theirs + "mlp.gate_proj", cfg.bias),
                *linear(ours + "ff.up", theirs + "mlp.up_proj", cfg.bias),
                *linear(ours + "ff.down", theirs + "mlp.down_proj", cfg.bias),
            ]
        return rules
