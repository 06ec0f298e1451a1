"""T5: an encoder-decoder with RMSNorm, no biases, and a learned relative-position bias shared by a stack's layers.

T5 does not divide attention scores by sqrt(head size); lmlab does, so the exported queries carry the factor.
transformers always ties T5's output projection to the embeddings and, when config.json does not say
`tie_word_embeddings: false`, scales the decoder output by d_model^-0.5 first: lmlab's tied model exports with
`tie_word_embeddings: false` (no scaling), and an imported T5 that scales becomes an untied lmlab model whose output
matrix is the embeddings times that factor.
"""

from __future__ import annotations

from typing import Any

from lmlab.hf.mapping import ACTIVATIONS, Mapping, Rule, linear, require, same, scaled_query, unscaled_query
from lmlab.models import ModelConfig

LAYOUT: dict[str, Any] = {
    "layout": "encoder_decoder",
    "norm_position": "pre",
    "norm": "rmsnorm",
    "positions": "relative",
    "mixer": "attention",
    "bias": False,
    "segments": 0,
    "tie_embeddings": True,
}


class T5(Mapping):
    model_type = "t5"
    name = "T5"
    layout = LAYOUT

    def hf_config(self, cfg: ModelConfig) -> dict[str, Any]:
        act = ACTIVATIONS[cfg.activation]
        return {
            "vocab_size": cfg.vocab_size,
            "d_model": cfg.d_model,
            "d_kv": cfg.d_model // cfg.n_heads,
            "d_ff": cfg.d_ff,
            "num_layers": cfg.n_layers,
            "num_decoder_layers": cfg.n_layers,
            "num_heads": cfg.n_heads,
            "relative_attention_num_buckets": cfg.relative_buckets,
            "relative_attention_max_distance": cfg.relative_max_distance,
            "dropout_rate": cfg.dropout,
            "layer_norm_epsilon": cfg.norm_eps,
            "feed_forward_proj": f"gated-{act}" if cfg.feed_forward == "glu" else act,
            # T5 initialises with std factor * d_model^-0.5; the factor gives lmlab's init_std back.
            "initializer_factor": cfg.init_std * cfg.d_model**0.5,
            "n_positions": cfg.max_positions,
            "tie_word_embeddings": False,
        }

    def model_config(self, hf: dict[str, Any]) -> ModelConfig:
        layers, heads = hf["num_layers"], hf["num_heads"]
        require(hf, "t5", "num_decoder_layers", layers, layers)
        require(hf, "t5", "d_kv", hf["d_model"] // heads)
        proj = hf.get("feed_forward_proj", "relu")
        gated = proj.startswith("gated-")
        act = proj.removeprefix("gated-")
        return ModelConfig(
            **LAYOUT,
            n_layers=layers,
            d_model=hf["d_model"],
            n_heads=heads,
            d_ff=hf["d_ff"],
            max_positions=hf.get("n_positions", 512),
            dropout=hf.get("dropout_rate", 0.1),
            attention_dropout=0.0,
            norm_eps=hf.get("layer_norm_epsilon", 1e-6),
            feed_forward="glu" if gated else "mlp",
            # T5 spells the tanh GELU gelu_new when gated ("gated-gelu").
            activation=self.activation("gelu_new" if proj == "gated-gelu" else act, "feed_forward_proj"),
            relative_buckets=hf.get("relative_attention_num_buckets", 32),
            relative_max_distance=hf.get("relative_attention_max_distance", 128),
            init_std=hf.get("initializer_factor", 1.0) * hf["d_model"] ** -0.5,
            vocab_size=hf["vocab_size"],
        )

    def rules(self, cfg: ModelConfig) -> list[Rule]:
        rules = [
            Rule("token_embedding.weight", ("shared.weight",)),
            Rule(
                "stack.relative.bias.weight", ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",)
            ),
            Rule(
                "decoder.relative.bias.weight",
                ("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",),
            ),
            *linear("stack.final_norm", "encoder.final_layer_norm", False),
            *linear("decoder.final_norm", "decoder.final_layer_norm", False),
        ]
        for stack, theirs in (("stack", "encoder"), ("decoder", "decoder")):
            for i in range(cfg.n_layers):
                ours, layer = f"{stack}.blocks.{i}.", f"{theirs}.block.{i}.layer."
                attention = layer + "0.SelfAttention."
                rules += [
                    *linear(ours + "norms.0", layer + "0.layer_norm", False),
                    *linear(
                        ours + "mixer.qkv",
                        (attention + "q", attention + "k", attention + "v"),
                        False,
                        out=(unscaled_query, same, same),
                        back=(scaled_query, same, same),
                    ),
                    *linear(ours + "mixer.out", attention + "o", False),
                ]
                ff = layer + "1."
                if stack == "decoder":
                    cross, ff = layer + "1.EncDecAttention.", layer + "2."
                    rules += [
                        *linear(ours + "norms.1", layer + "1.layer_norm", False),
                        *linear(ours + "cross.q", cross + "q", False, out=(unscaled_query,), back=(scaled_query,)),
                        *linear(ours + "cross.kv", (cross + "k", cross + "v"), False),
                        *linear(ours + "cross.out", cross + "o", False),
                    ]
                dense = ff + "DenseReluDense."
                rules += [*linear(f"{ours}norms.{2 if stack == 'decoder' else 1}", ff + "layer_norm", False)]
                if cfg.feed_forward == "glu":
                    rules += [
                        *linear(ours + "ff.gate", dense + "wi_0", False),
                        *linear(ours + "ff.up", dense + "wi_1", False),
                    ]
                else:
                    rules += linear(ours + "ff.up", dense + "wi", False)
                rules += linear(ours + "ff.down", dense + "wo", False)
        return rules
