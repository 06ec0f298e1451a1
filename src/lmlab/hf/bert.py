"""BERT: a post-norm encoder with learned positions and segment (token type) embeddings."""

from __future__ import annotations

from typing import Any

import torch

from lmlab.hf.mapping import ACTIVATIONS, Mapping, Rule, linear, require
from lmlab.models import ModelConfig

LAYOUT: dict[str, Any] = {
    "layout": "encoder",
    "norm_position": "post",
    "norm": "layernorm",
    "feed_forward": "mlp",
    "positions": "learned",
    "mixer": "attention",
    "bias": True,
}


class Bert(Mapping):
    model_type = "bert"
    name = "BERT"
    layout = LAYOUT

    def hf_config(self, cfg: ModelConfig) -> dict[str, Any]:
        return {
            "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.d_model,
            "num_hidden_layers": cfg.n_layers,
            "num_attention_heads": cfg.n_heads,
            "intermediate_size": cfg.d_ff,
            "hidden_act": ACTIVATIONS[cfg.activation],
            "hidden_dropout_prob": cfg.dropout,
            "attention_probs_dropout_prob": cfg.attention_dropout,
            "max_position_embeddings": cfg.max_positions,
            # BERT always adds a token type embedding; without segments it is one row of zeros.
            "type_vocab_size": max(1, cfg.segments),
            "layer_norm_eps": cfg.norm_eps,
            "initializer_range": cfg.init_std,
            "tie_word_embeddings": cfg.tie_embeddings,
        }

    def model_config(self, hf: dict[str, Any]) -> ModelConfig:
        require(hf, "bert", "position_embedding_type", "absolute", "absolute")
        require(hf, "bert", "is_decoder", False, False)
        require(hf, "bert", "add_cross_attention", False, False)
        return ModelConfig(
            **LAYOUT,
            n_layers=hf["num_hidden_layers"],
            d_model=hf["hidden_size"],
            n_heads=hf["num_attention_heads"],
            d_ff=hf["intermediate_size"],
            max_positions=hf["max_position_embeddings"],
            dropout=hf.get("hidden_dropout_prob", 0.1),
            attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
            norm_eps=hf.get("layer_norm_eps", 1e-12),
            activation=self.activation(hf.get("hidden_act", "gelu"), "hidden_act"),
            segments=hf.get("type_vocab_size", 2),
            tie_embeddings=hf.get("tie_word_embeddings", True),
            init_std=hf.get("initializer_range", 0.02),
            vocab_size=hf["vocab_size"],
        )

    def rules(self, cfg: ModelConfig) -> list[Rule]:
        rules = [
            Rule("token_embedding.weight", ("embeddings.word_embeddings.weight",)),
            Rule("stack.positions.embedding.weight", ("embeddings.position_embeddings.weight",)),
            *linear("stack.embedding_norm", "embeddings.LayerNorm"),
        ]
        if cfg.segments:
            rules.append(Rule("segment_embedding.weight", ("embeddings.token_type_embeddings.weight",)))
        for i in range(cfg.n_layers):
            ours, theirs = f"stack.blocks.{i}.", f"encoder.layer.{i}."
            attention = theirs + "attention.self."
            rules += [
                *linear(ours + "mixer.qkv", (attention + "query", attention + "key", attention + "value")),
                *linear(ours + "mixer.out", theirs + "attention.output.dense"),
                *linear(ours + "norms.0", theirs + "attention.output.LayerNorm"),
                *linear(ours + "ff.up", theirs + "intermediate.dense"),
                *linear(ours + "ff.down", theirs + "output.dense"),
                *linear(ours + "norms.1", theirs + "output.LayerNorm"),
            ]
        return rules

    def to_hf(self, cfg: ModelConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = super().to_hf(cfg, state)
        if not cfg.segments:
            out["embeddings.token_type_embeddings.weight"] = state["token_embedding.weight"].new_zeros(1, cfg.d_model)
        return out
