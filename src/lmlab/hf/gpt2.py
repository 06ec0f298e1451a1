"""GPT-2: a pre-norm decoder with learned positions; its linear layers are Conv1D, which store (in, out)."""

from __future__ import annotations

from typing import Any

from lmlab.hf.mapping import ACTIVATIONS, Mapping, Rule, linear, require
from lmlab.models import ModelConfig

LAYOUT: dict[str, Any] = {
    "layout": "decoder",
    "norm_position": "pre",
    "norm": "layernorm",
    "feed_forward": "mlp",
    "positions": "learned",
    "mixer": "attention",
    "bias": True,
    "segments": 0,
}


class GPT2(Mapping):
    model_type = "gpt2"
    name = "GPT-2"
    layout = LAYOUT

    def hf_config(self, cfg: ModelConfig) -> dict[str, Any]:
        return {
            "vocab_size": cfg.vocab_size,
            "n_embd": cfg.d_model,
            "n_layer": cfg.n_layers,
            "n_head": cfg.n_heads,
            "n_inner": cfg.d_ff,
            "activation_function": ACTIVATIONS[cfg.activation],
            "resid_pdrop": cfg.dropout,
            "embd_pdrop": cfg.dropout,
            "attn_pdrop": cfg.attention_dropout,
            "n_positions": cfg.max_positions,
            "layer_norm_epsilon": cfg.norm_eps,
            "initializer_range": cfg.init_std,
            "tie_word_embeddings": cfg.tie_embeddings,
        }

    def model_config(self, hf: dict[str, Any]) -> ModelConfig:
        require(hf, "gpt2", "scale_attn_weights", True, True)
        require(hf, "gpt2", "scale_attn_by_inverse_layer_idx", False, False)
        require(hf, "gpt2", "add_cross_attention", False, False)
        return ModelConfig(
            **LAYOUT,
            n_layers=hf["n_layer"],
            d_model=hf["n_embd"],
            n_heads=hf["n_head"],
            d_ff=hf.get("n_inner") or 4 * hf["n_embd"],
            max_positions=hf["n_positions"],
            dropout=hf.get("resid_pdrop", 0.1),
            attention_dropout=hf.get("attn_pdrop", 0.1),
            norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            activation=self.activation(hf.get("activation_function", "gelu_new"), "activation_function"),
            tie_embeddings=hf.get("tie_word_embeddings", True),
            init_std=hf.get("initializer_range", 0.02),
            vocab_size=hf["vocab_size"],
        )

    def rules(self, cfg: ModelConfig) -> list[Rule]:
        rules = [
            Rule("token_embedding.weight", ("wte.weight",)),
            Rule("stack.positions.embedding.weight", ("wpe.weight",)),
            *linear("stack.final_norm", "ln_f"),
        ]
        for i in range(cfg.n_layers):
            ours, theirs = f"stack.blocks.{i}.", f"h.{i}."
            rules += [
                *linear(ours + "norms.0", theirs + "ln_1"),
                *linear(ours + "mixer.qkv", theirs + "attn.c_attn", transpose=True),
                *linear(ours + "mixer.out", theirs + "attn.c_proj", transpose=True),
                *linear(ours + "norms.1", theirs + "ln_2"),
                *linear(ours + "ff.up", theirs + "mlp.c_fc", transpose=True),
                *linear(ours + "ff.down", theirs + "mlp.c_proj", transpose=True),
            ]
        return rules
