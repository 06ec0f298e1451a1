"""Hugging Face doors: tiny lmlab models exported and loaded by `transformers` give the same logits, generations and
token ids; tiny HF models imported into lmlab give the same logits; runs start from HF checkpoints with lineage;
options with no HF counterpart are refused by name."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from torch import nn

from lmlab.config_schema import parse
from lmlab.data.config import DataConfig
from lmlab.data.tokenizer import CLS, SEP, TrainedTokenizer
from lmlab.errors import InputError, MissingInputFile
from lmlab.finetuning.config import register_finetune_configs
from lmlab.finetuning.run import finetune
from lmlab.generation import GenerationConfig, generate
from lmlab.heads import IGNORE
from lmlab.hf.architectures import mapping_for
from lmlab.hf.bert import LAYOUT as BERT
from lmlab.hf.gpt2 import LAYOUT as GPT2
from lmlab.hf.importing import load_hf
from lmlab.hf.llama import LAYOUT as LLAMA
from lmlab.hf.t5 import LAYOUT as T5
from lmlab.models import Backbone, ModelConfig
from lmlab.objectives import build_objective
from lmlab.objectives.heldout import validation_batches
from lmlab.objectives.mlm import MLMHead
from lmlab.pretraining.config import TrainConfig
from lmlab.pretraining.evaluate import evaluate_run
from lmlab.pretraining.run import build_pretraining, pretrain
from lmlab.publishing.hf import export_hf
from lmlab.publishing.run import ExportConfig, export
from lmlab.rl.run import rl
from lmlab.runs.export_dir import load_export, write_export
from lmlab.runs.starting_point import load_run
from lmlab.tasks.base import pooled
from lmlab.tasks.classification import ClassificationHead

from .conftest import CONF, ROOT, TINY, _link_experiments, run_env
from .test_rl import compose_rl

transformers = pytest.importorskip("transformers")
register_finetune_configs()

SIZE = {"n_layers": 2, "d_model": 32, "n_heads": 4, "d_ff": 64, "max_positions": 64, "dropout": 0.0}
SIZE["attention_dropout"] = 0.0
LAYOUTS = {
    "bert": {**BERT, "segments": 2},
    "gpt2": GPT2,
    "llama": {**LLAMA, "bias": False, "tie_embeddings": False, "rotary_base": 500.0},
    "llama_bias": {**LLAMA, "bias": True, "activation": "gelu_tanh"},
    "t5": {**T5, "feed_forward": "glu", "activation": "gelu_tanh", "relative_buckets": 8, "relative_max_distance": 16},
}
TEXTS = ["Ada Lovelace works for the Analytical Engine company.", "Paris is"]
TOL = {"atol": 2e-5, "rtol": 1e-4}


def _backbone(layout: dict, vocab: int, seed: int = 0) -> Backbone:
    """A tiny backbone whose norms are not the identity (so a misplaced norm shows)."""
    torch.manual_seed(seed)
    backbone = Backbone(ModelConfig(**SIZE, **layout, vocab_size=vocab)).eval()
    with torch.no_grad():
        for name, p in backbone.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    return backbone


def _export(
    root: Path, backbone: Backbone, head: nn.Module, tokenizer: TrainedTokenizer, objective: str, **texts: str
) -> Path:
    weights = nn.ModuleDict({"backbone": backbone, "head": head})
    metadata = {"objective": json.dumps({"name": objective}), "global_step": "7"}
    return write_export(root, weights, backbone.cfg, tokenizer, metadata, texts)


def _batch(tokenizer: TrainedTokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Two texts right-padded to one length: ids and the real-token mask."""
    rows = [tokenizer.tokenizer.encode(t, add_special_tokens=False).ids for t in TEXTS]
    length = max(map(len, rows))
    ids = torch.tensor([r + [0] * (length - len(r)) for r in rows])
    mask = torch.tensor([[True] * len(r) + [False] * (length - len(r)) for r in rows])
    return ids, mask


def _exported(tmp_path: Path, run_dir: Path):
    result = export_hf(load_export(str(run_dir)), tmp_path / "hf", {})
    auto = getattr(transformers, result.auto_class)
    return result, auto.from_pretrained(str(result.path), trust_remote_code=result.trust_remote_code).eval()


@pytest.mark.parametrize("arch", ["gpt2", "llama", "llama_bias"])
def test_an_exported_decoder_gives_the_same_logits_generation_and_ids(arch, tokenizer, tmp_path):
    backbone = _backbone(LAYOUTS[arch], tokenizer.vocab_size)
    result, hf = _exported(tmp_path, _export(tmp_path / "run", backbone, nn.Identity(), tokenizer, "clm"))
    assert result.model_class == {"gpt2": "GPT2LMHeadModel"}.get(arch, "LlamaForCausalLM")
    ids, mask = _batch(tokenizer)
    with torch.no_grad():
        ours = backbone.output_projection(backbone(ids, mask))
        theirs = hf(input_ids=ids, attention_mask=mask.long()).logits
    torch.testing.assert_close(theirs[mask], ours[mask], **TOL)

    prompt = ids[:1, : int(mask[0].sum())]
    sep = tokenizer.token_id(SEP)
    ours_out = generate(backbone, prompt, GenerationConfig(max_new_tokens=20), stop_id=sep)
    theirs_out = hf.generate(prompt, max_new_tokens=20, do_sample=False)
    assert theirs_out.tolist() == ours_out.tolist()

    hf_tok = transformers.AutoTokenizer.from_pretrained(str(result.path))
    for text in TEXTS:
        assert hf_tok(text)["input_ids"] == tokenizer.tokenizer.encode(text, add_special_tokens=False).ids
    assert hf_tok.eos_token == SEP and hf_tok.pad_token_id == tokenizer.token_id("[PAD]")


def test_an_exported_bert_mlm_gives_the_same_logits_and_pair_ids(tokenizer, tmp_path):
    backbone = _backbone(LAYOUTS["bert"], tokenizer.vocab_size)
    head = MLMHead(backbone.cfg)
    with torch.no_grad():
        head.bias.normal_()
        head.norm.weight.add_(torch.randn(backbone.cfg.d_model) * 0.3)
    result, hf = _exported(tmp_path, _export(tmp_path / "run", backbone, head.eval(), tokenizer, "mlm"))
    assert result.model_class == "BertForMaskedLM"
    ids, mask = _batch(tokenizer)
    with torch.no_grad():
        ours = head(backbone(ids, mask), backbone)
        theirs = hf(input_ids=ids, attention_mask=mask.long()).logits
    torch.testing.assert_close(theirs[mask], ours[mask], **TOL)

    hf_tok = transformers.AutoTokenizer.from_pretrained(str(result.path))
    cls, sep = tokenizer.token_id(CLS), tokenizer.token_id(SEP)
    a, b = (tokenizer.tokenizer.encode(t, add_special_tokens=False).ids for t in TEXTS)
    pair = hf_tok(TEXTS[0], TEXTS[1])
    assert pair["input_ids"] == [cls, *a, sep, *b, sep]
    assert pair["token_type_ids"] == [0] * (len(a) + 2) + [1] * (len(b) + 1)
    card = (result.path / "README.md").read_text()
    assert 'pipeline_tag: "fill-mask"' in card and "objective: `mlm`; steps: 7" in card


def test_an_exported_t5_gives_the_same_logits_and_generation(tokenizer, tmp_path):
    backbone = _backbone(LAYOUTS["t5"], tokenizer.vocab_size)
    result, hf = _exported(tmp_path, _export(tmp_path / "run", backbone, nn.Identity(), tokenizer, "span"))
    assert result.model_class == "T5ForConditionalGeneration"
    ids, mask = _batch(tokenizer)
    cls, sep = tokenizer.token_id(CLS), tokenizer.token_id(SEP)
    target = torch.cat([torch.full((2, 1), cls), ids[:, :5]], dim=1)
    with torch.no_grad():
        ours = backbone.output_projection(backbone.decode(target, backbone(ids, mask), mask))
        theirs = hf(input_ids=ids, attention_mask=mask.long(), decoder_input_ids=target).logits
    torch.testing.assert_close(theirs, ours, **TOL)

    hf_tok = transformers.AutoTokenizer.from_pretrained(str(result.path))
    source = torch.tensor([hf_tok(TEXTS[0])["input_ids"]])
    assert source[0].tolist() == [*tokenizer.tokenizer.encode(TEXTS[0], add_special_tokens=False).ids, sep]
    ours_out = generate(backbone, source, GenerationConfig(max_new_tokens=20), stop_id=sep, start_id=cls)
    theirs_out = hf.generate(source, max_new_tokens=20, do_sample=False)
    assert theirs_out.tolist() == ours_out.tolist()


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
def test_a_classifier_exports_to_auto_sequence_classification_with_its_labels(arch, tokenizer, tmp_path):
    labels = ["arts", "business", "science"]
    backbone = _backbone(LAYOUTS[arch], tokenizer.vocab_size)
    head = ClassificationHead(backbone.cfg.d_model, len(labels), 0.1).eval()
    texts = {"config.yaml": "task:\n  family: classification\n", "labels.json": json.dumps(labels)}
    result, hf = _exported(tmp_path, _export(tmp_path / "run", backbone, head, tokenizer, "clm", **texts))
    assert result.trust_remote_code and result.auto_class == "AutoModelForSequenceClassification"
    assert hf.config.id2label == dict(enumerate(labels))
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(result.path))
    enc = hf_tok(TEXTS, padding=True, return_tensors="pt")
    mask = enc["attention_mask"].bool()
    batch = {"input_ids": enc["input_ids"], "padding_mask": mask, "n_real": mask.sum(1)}
    with torch.no_grad():
        ours = head(pooled(backbone, backbone(enc["input_ids"], mask), batch))
        theirs = hf(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    torch.testing.assert_close(theirs, ours, **TOL)


@pytest.mark.parametrize("family", ["token_classification", "extractive_qa"])
def test_token_and_span_heads_export_to_their_auto_classes(family, tokenizer, tmp_path):
    backbone = _backbone(LAYOUTS["llama"], tokenizer.vocab_size)
    width = 3 if family == "token_classification" else 2
    linear = nn.Linear(backbone.cfg.d_model, width)
    head = nn.Sequential(nn.Dropout(0.1), linear) if family == "token_classification" else linear
    texts = {"config.yaml": f"task:\n  family: {family}\n", "labels.json": json.dumps(["O", "B-PER", "I-PER"])}
    result, hf = _exported(tmp_path, _export(tmp_path / "run", backbone, head.eval(), tokenizer, "clm", **texts))
    ids, mask = _batch(tokenizer)
    with torch.no_grad():
        ours = head(backbone(ids, mask))
        out = hf(input_ids=ids, attention_mask=mask.long())
    theirs = out.logits if family == "token_classification" else torch.stack([out.start_logits, out.end_logits], -1)
    torch.testing.assert_close(theirs[mask], ours[mask], **TOL)


def _hf_tokenizer(directory: Path, specials: list[str]) -> int:
    """A small byte-level BPE tokenizer with `specials` only, saved as transformers saves one; returns its size."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([*TEXTS, "the quick brown fox jumps over the lazy dog"] * 20, trainer=trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=specials[0])
    fast.save_pretrained(str(directory))
    return tok.get_vocab_size()


def _hf_checkpoint(arch: str, directory: Path) -> tuple[nn.Module, int]:
    """A randomly initialised tiny HF model (norms randomised) saved with its tokenizer; returns it and the
    tokenizer's size."""
    specials = {
        "gpt2": ["<|endoftext|>"],
        "llama": ["</s>", "<s>", "<unk>"],
        "bert": ["[PAD]"],
        "t5": ["<pad>", "</s>"],
    }[arch]
    size = _hf_tokenizer(directory, specials)
    common = {"vocab_size": size}
    config = {
        "bert": transformers.BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, **common
        ),
        "gpt2": transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, **common),
        # A rounded-up embedding table (more rows than tokens), a non-default RoPE base, no biases.
        "llama": transformers.LlamaConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            vocab_size=size + 20,
            rope_parameters={"rope_type": "default", "rope_theta": 500.0},
        ),
        # Tied and scaled (transformers' default for T5): an untied lmlab projection that carries d_model^-0.5.
        "t5": transformers.T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, **common),
    }[arch]
    auto = {
        "bert": transformers.BertForMaskedLM,
        "gpt2": transformers.GPT2LMHeadModel,
        "llama": transformers.LlamaForCausalLM,
        "t5": transformers.T5ForConditionalGeneration,
    }
    torch.manual_seed(1)
    model = auto[arch](config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower() or "ln_" in name:
                p.add_(torch.randn_like(p) * 0.3)
    model.save_pretrained(str(directory))
    return model, size


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama", "t5"])
def test_an_imported_hf_model_gives_the_same_logits(arch, tmp_path):
    model, size = _hf_checkpoint(arch, tmp_path / "hf")
    run = load_hf(f"hf:{tmp_path / 'hf'}", tmp_path / "cache")
    lineage = run.lineage
    assert lineage["lmlab.hf_model_type"] == arch
    backbone = Backbone(run.model_cfg).eval()
    backbone.load_state_dict(
        {k.removeprefix("backbone."): v for k, v in run.weights.items() if k.startswith("backbone.")}
    )
    ids = torch.randint(0, size, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    with torch.no_grad():
        hidden = backbone(ids, mask)
        if arch == "bert":
            head = MLMHead(run.model_cfg)
            head.load_state_dict({k.removeprefix("head."): v for k, v in run.weights.items() if k.startswith("head.")})
            ours = head(hidden, backbone)
            theirs = model(input_ids=ids, attention_mask=mask.long()).logits
        elif arch == "t5":
            target = ids[:, :5]
            ours = backbone.output_projection(backbone.decode(target, hidden, mask))
            theirs = model(input_ids=ids, attention_mask=mask.long(), decoder_input_ids=target).logits
            mask = torch.ones(2, 5, dtype=torch.bool)
        else:
            ours = backbone.output_projection(hidden)
            theirs = model(input_ids=ids, attention_mask=mask.long()).logits
    vocab = theirs.shape[-1]
    torch.testing.assert_close(ours[..., :vocab][mask], theirs[mask], **TOL)
    # lmlab's special tokens were added where the tokenizer lacked them (rows past the HF table start as the mean).
    missing = {"bert": 4, "gpt2": 5, "llama": 5, "t5": 5}[arch]
    assert (
        len([t for t in lineage["lmlab.hf_added_tokens"].split(",") if t.startswith("[") and "UNUSED" not in t])
        == missing
    )
    if arch == "llama":
        assert run.model_cfg.bias is False and run.model_cfg.rotary_base == 500.0
        assert (
            run.model_cfg.vocab_size == vocab
        )  # the 5 specials took 5 of the 20 spare rows; 15 [UNUSEDi] fill the rest


def test_evaluate_scores_an_hf_model_as_transformers_does(tmp_path):
    model, size = _hf_checkpoint("gpt2", tmp_path / "gpt2")
    source, cache = f"hf:{tmp_path / 'gpt2'}", tmp_path / ".cache"
    data = DataConfig(block_size=32, batch_size=8)
    data.world.train_documents, data.world.validation_documents = 300, 40
    metrics = evaluate_run(source, data, cache, None, max_batches=3)

    run, lineage = load_run(source, None, cache)
    assert lineage["lmlab.pretrained"] == source and run.objective_name == "clm"
    # The import appends lmlab's special tokens (documents are packed with [SEP] between them) as rows holding the
    # mean embedding: transformers' model gets the same rows.
    assert run.model_cfg.vocab_size == size + 5
    model.resize_token_embeddings(size + 5)
    with torch.no_grad():
        model.transformer.wte.weight[size:] = model.transformer.wte.weight[:size].mean(0)
    batches = validation_batches(data, run.tokenizer, build_objective(run.objective, run.tokenizer), cache, 0, 3)
    total, targets = 0.0, 0
    for batch in batches:
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"]).logits
        labels = batch["labels"].flatten()
        total += float(
            torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels, ignore_index=IGNORE, reduction="sum")
        )
        targets += int((labels != IGNORE).sum())
    assert metrics["targets"] == targets
    assert metrics["loss"] == pytest.approx(total / targets, rel=1e-5)


def test_evaluate_refuses_a_model_without_a_pretraining_head_before_tokenizing(tmp_path):
    size = _hf_tokenizer(tmp_path / "bert", ["[PAD]"])
    config = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=size
    )
    transformers.BertModel(config).save_pretrained(str(tmp_path / "bert"))  # no MLM head
    with pytest.raises(InputError, match=r"records no pretraining objective to score it under \(objective 'none'\)"):
        evaluate_run(f"hf:{tmp_path / 'bert'}", DataConfig(block_size=32), tmp_path / ".cache", None)
    assert not (tmp_path / ".cache" / "tokens").exists()


def test_generate_py_continues_a_prompt_with_an_hf_model_as_transformers_does(tmp_path):
    model, _ = _hf_checkpoint("gpt2", tmp_path / "gpt2")
    source = f"hf:{tmp_path / 'gpt2'}"
    cmd = [sys.executable, "generate.py", f"run={source}", "prompt='Paris is'", "generation.max_new_tokens=8"]
    done = subprocess.run(cmd, cwd=ROOT, env=run_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    tok = load_run(source, None, tmp_path / ".cache")[0].tokenizer.tokenizer
    ids = tok.encode("Paris is", add_special_tokens=False).ids
    out = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert done.stdout.splitlines()[-1] == "Paris is " + tok.decode(out[0, len(ids) :].tolist())


@pytest.mark.slow
def test_rl_fine_tunes_an_hf_policy_and_records_its_source(project):
    _hf_checkpoint("gpt2", project / "gpt2")
    source = f"hf:{project / 'gpt2'}"
    rl(compose_rl(source, "rl=rloo"), project / "run")
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("lmlab").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["lmlab.policy_run"] == source and run.data.tags["lmlab.hf_model_type"] == "gpt2"
    exported = load_export(str(project / "run"))
    assert exported.objective_name == "clm" and exported.model_cfg.layout == "decoder"


def _compose(config: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config, overrides=list(overrides))


@pytest.mark.slow
def test_continued_mlm_from_hf_bert_and_a_finetune_from_hf_gpt2_record_their_source(tmp_path, monkeypatch):
    monkeypatch.setenv("LMLAB_ROOT", str(tmp_path))
    _link_experiments(tmp_path)
    _hf_checkpoint("bert", tmp_path / "bert")
    _hf_checkpoint("gpt2", tmp_path / "gpt2")
    quick = [o for o in TINY if not o.startswith(("model.", "data.tokenizer"))]
    cfg = _compose("config", *quick, "objective=mlm", f"init=hf:{tmp_path / 'bert'}", "data.block_size=32")
    metrics = pretrain(cfg, tmp_path / "mlm")
    assert metrics["val/loss"] > 0
    ft = _compose(
        "finetune",
        "task=synthetic_topic",
        f"pretrained=hf:{tmp_path / 'gpt2'}",
        "trainer.max_steps=10",
        "trainer.enable_progress_bar=false",
        "task.train_examples=64",
        "task.validation_examples=32",
        "task.max_length=48",
    )
    finetune(ft, tmp_path / "ft")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("lmlab").experiment_id])
    tags = {r.data.tags.get("lmlab.kind", "pretrain"): r.data.tags for r in runs}
    assert tags["pretrain"]["lmlab.pretrained"] == f"hf:{tmp_path / 'bert'}"
    assert tags["pretrain"]["lmlab.hf_architectures"] == "BertForMaskedLM"
    assert tags["finetune"]["lmlab.pretrained"] == f"hf:{tmp_path / 'gpt2'}"
    assert tags["finetune"]["lmlab.hf_model_type"] == "gpt2"
    # The continued run starts from the checkpoint's MLM head as well as its encoder: the export round-trips to HF.
    mlm = load_export(str(tmp_path / "mlm"))
    assert mlm.model_cfg.norm_position == "post" and "head.dense.weight" in mlm.weights

    # The fine-tune exports as a sequence classifier whose labels are the run's.
    out = export(
        ExportConfig(
            run=str(tmp_path / "ft"), out=str(tmp_path / "exported"), tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"
        )
    )
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(str(out), trust_remote_code=True)
    assert list(hf.config.id2label.values()) == json.loads((tmp_path / "ft" / "export" / "labels.json").read_text())
    card = (out / "README.md").read_text()
    assert f"lmlab.pretrained: `hf:{tmp_path / 'gpt2'}`" in card and "lmlab.hf_model_type: `gpt2`" in card
    assert "task: `synthetic_topic` (classification); steps: 10" in card and "| val/acc |" in card


def _cfg(**options) -> ModelConfig:
    return ModelConfig(**SIZE, vocab_size=50, **options)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"layout": "encoder", "positions": "rotary"}, "model.positions='rotary'"),
        ({"layout": "prefix_lm"}, "model.layout='prefix_lm'"),
        ({"layout": "decoder", "mixer": "conv"}, "model.mixer='conv'"),
        ({"layout": "decoder", "positions": "sinusoidal"}, "model.positions='sinusoidal'"),
        ({**T5, "tie_embeddings": False}, "model.tie_embeddings=False"),
        ({**LLAMA, "norm": "layernorm"}, "model.norm='layernorm'"),
    ],
)
def test_options_with_no_hf_counterpart_are_refused_by_name(options, named):
    with pytest.raises(InputError, match="no exact Hugging Face counterpart") as err:
        mapping_for(_cfg(**options))
    assert named in str(err.value)


@pytest.mark.parametrize(
    ("arch", "field", "value"),
    [
        ("llama", "num_key_value_heads", 2),
        ("llama", "rope_scaling", {"rope_type": "linear", "factor": 2.0}),
        ("bert", "position_embedding_type", "relative_key"),
        ("gpt2", "scale_attn_by_inverse_layer_idx", True),
    ],
)
def test_hf_configs_lmlab_cannot_reproduce_are_refused_by_field(arch, field, value, tmp_path):
    _hf_checkpoint(arch, tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, field: value}))
    with pytest.raises(InputError, match=field):
        load_hf(f"hf:{tmp_path / 'hf'}", tmp_path / "cache")


def test_an_export_refuses_a_non_empty_directory_and_an_unknown_format(tokenizer, tmp_path):
    run = _export(tmp_path / "run", _backbone(LAYOUTS["gpt2"], tokenizer.vocab_size), nn.Identity(), tokenizer, "clm")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="exists and is not empty"):
        export(ExportConfig(run=str(run), out=str(tmp_path / "out")))
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
    with pytest.raises(InputError, match="format"):
        export(ExportConfig(run=str(run), format="onnx", out=str(tmp_path / "new")))
    assert not (tmp_path / "new").exists()


def test_a_missing_hf_source_names_the_path_or_the_hub_name(tmp_path, monkeypatch):
    with pytest.raises(MissingInputFile, match="not a directory holding a Hugging Face model"):
        load_hf(f"hf:{tmp_path / 'nowhere' / 'x'}", tmp_path / "cache")
    # A name that is not a directory goes to the hub (offline here: the real download call, refused fast).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingInputFile, match="the hub could not provide 'lmlab-tests/no-such-model'"):
        load_hf("hf:lmlab-tests/no-such-model", tmp_path / "cache")


def test_an_unmappable_pretraining_run_is_refused_before_anything_is_written(tokenizer, tmp_path):
    backbone = _backbone({"layout": "decoder", "positions": "sinusoidal"}, tokenizer.vocab_size)
    run = _export(tmp_path / "run", backbone, nn.Identity(), tokenizer, "clm")
    with pytest.raises(InputError, match="model.positions='sinusoidal'"):
        export(ExportConfig(run=str(run), out=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_the_registry_holds_an_export_that_mlflow_loads(tokenizer, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    source = client.create_run(client.create_experiment("pretraining")).info.run_id
    client.set_terminated(source, "FAILED")  # a record export.py must leave as it is
    backbone = _backbone(LAYOUTS["gpt2"], tokenizer.vocab_size)
    weights = nn.ModuleDict({"backbone": backbone, "head": nn.Identity()})
    metadata = {"objective": json.dumps({"name": "clm"}), "global_step": "7", "run_id": source}
    run = write_export(tmp_path / "run", weights, backbone.cfg, tokenizer, metadata, {})
    before = client.get_run(source)
    for bad in ("a/b", "x:y", " "):  # refused before anything is written or logged
        with pytest.raises(InputError, match=f"register={bad!r} is not a registry name MLflow accepts"):
            export(ExportConfig(run=str(run), out=str(tmp_path / "bad"), register=bad, tracking_uri=uri))
    assert not (tmp_path / "bad").exists()
    export(ExportConfig(run=str(run), out=str(tmp_path / "hf"), register="tiny-gpt2", tracking_uri=uri))
    after = client.get_run(source)
    assert (after.info.status, after.info.end_time, after.data.tags) == (
        before.info.status,
        before.info.end_time,
        before.data.tags,
    )
    [version] = client.search_model_versions("name='tiny-gpt2'")
    own = client.get_run(version.run_id)
    assert own.info.run_id != source and own.info.status == "FINISHED"
    assert own.data.tags["lmlab.kind"] == "export" and own.data.tags["lmlab.source_run_id"] == source
    import mlflow.pytorch

    model = mlflow.pytorch.load_model(f"models:/tiny-gpt2/{version.version}")
    assert type(model).__name__ == "GPT2LMHeadModel"
    ids, _ = _batch(tokenizer)
    reference = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    torch.testing.assert_close(model(input_ids=ids).logits, reference(input_ids=ids).logits)


def test_the_layouts_of_the_style_presets_map(compose_config):
    for preset, objective, arch in [
        ("bert_style", "mlm", "bert"),
        ("gpt2_style", "clm", "gpt2"),
        ("llama_style", "clm", "llama"),
        ("t5_style", "span", "t5"),
    ]:
        cfg = compose_config(f"model={preset}", f"objective={objective}")
        model = ModelConfig(**{k: v for k, v in cfg.model.items()})
        assert mapping_for(replace(model, vocab_size=10)).model_type == arch, preset


@pytest.mark.parametrize(("objective", "head_loaded"), [("mlm", True), ("electra", False)])
def test_init_from_an_lmlab_run_loads_its_backbone_and_its_head_for_the_same_objective(
    objective, head_loaded, tokenizer, compose_config, tmp_path
):
    backbone = _backbone({"layout": "encoder"}, tokenizer.vocab_size)
    head = MLMHead(backbone.cfg)
    run = _export(tmp_path / "run", backbone, head, tokenizer, "mlm")
    data = [o for o in TINY if o.startswith("data.world")]
    conf = parse(compose_config(*data, f"objective={objective}", f"init={run}"), TrainConfig)
    _, used, module, lineage = build_pretraining(conf)
    assert used.path == run / "tokenizer.json" and lineage["lmlab.pretrained"] == str(run)
    assert module.backbone.cfg == backbone.cfg
    for name, value in backbone.state_dict().items():
        assert torch.equal(module.backbone.state_dict()[name], value), name
    theirs = module.head.state_dict()
    loaded = all(k in theirs and torch.equal(theirs[k], v) for k, v in head.state_dict().items())
    assert loaded == head_loaded


def test_init_refuses_an_objective_for_another_layout(tokenizer, compose_config, tmp_path):
    run = _export(
        tmp_path / "run", _backbone({"layout": "encoder"}, tokenizer.vocab_size), nn.Identity(), tokenizer, "x"
    )
    conf = parse(compose_config("objective=clm", f"init={run}"), TrainConfig)
    with pytest.raises(InputError, match=r"objective=clm needs model.layout=decoder, but init=.* is a encoder"):
        build_pretraining(conf)
