"""Meta-learning: the meta-gradients (against finite differences and plain SGD), the inner loop's purity, the
episodes (pools, shapes, determinism, refusals) and the algorithms' contracts."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from lmlab.data.synthetic import TERMS
from lmlab.errors import InputError
from lmlab.meta.algorithms import algorithm_class, available_algorithms
from lmlab.meta.episodes import (
    EncodedClasses,
    Episode,
    EpisodeConfig,
    class_texts,
    cloze_classes,
    sample_episode,
    split_pools,
)
from lmlab.meta.inner import inner_loop, second_order_attention
from lmlab.meta.learners import Classifier
from lmlab.models import Backbone

from .meta_helpers import VOCAB, assert_meta_gradient_matches_finite_differences, flat_grad, tiny_backbone


def random_episode(n_way: int = 3, k_shot: int = 2, q_query: int = 2, length: int = 6, seed: int = 0) -> Episode:
    """Token ids in which each class has its own marker token, so there is something to learn."""
    g = torch.Generator().manual_seed(seed)

    def part(per_class: int) -> dict[str, torch.Tensor]:
        label = torch.arange(n_way).repeat_interleave(per_class)
        ids = torch.randint(10, VOCAB, (len(label), length), generator=g)
        ids[:, 1] = label + 1  # the class marker
        n_real = torch.randint(3, length + 1, (len(label),), generator=g)
        mask = torch.arange(length)[None, :] < n_real[:, None]
        return {"input_ids": ids, "padding_mask": mask, "n_real": n_real, "label": label}

    return Episode("train", 0, [f"c{i}" for i in range(n_way)], part(k_shot), part(q_query))


def algorithm(name: str, backbone: Backbone, **settings):
    cls = algorithm_class(name)
    return cls(cls.parse_config({"name": name, **settings}), backbone, ["c0", "c1", "c2", "c3"])


def test_the_second_order_meta_gradient_equals_finite_differences():
    """d/dθ of the query loss after two inner steps, differentiated through the steps, against central differences
    of the same function along a random direction (float64)."""
    backbone = tiny_backbone(torch.float64)
    maml = algorithm("maml", backbone, adapt="all", inner_steps=2, inner_lr=0.5)
    episode = random_episode()
    analytic = assert_meta_gradient_matches_finite_differences(maml, episode)

    # First-order MAML drops exactly the terms that make this match: it is a different gradient here.
    fomaml = algorithm("fomaml", copy.deepcopy(backbone), adapt="all", inner_steps=2, inner_lr=0.5)
    fomaml.episode_loss(episode)[0].backward()
    assert not torch.allclose(flat_grad(fomaml), analytic)


def test_with_inner_lr_zero_first_and_second_order_give_the_plain_gradient():
    """With no step size the adapted weights are the start, so both orders give the query loss's own gradient. A
    random (not zero) head, so that the gradient is not trivially zero."""
    encoder = Classifier(tiny_backbone(torch.float64), "all", 1)
    episode = random_episode()
    names = [n for n, _ in encoder.named_parameters()]
    head = {
        "head.weight": torch.randn(3, 8, dtype=torch.float64, requires_grad=True),
        "head.bias": torch.randn(3, dtype=torch.float64, requires_grad=True),
    }

    def meta_grad(create_graph: bool) -> torch.Tensor:
        start = {**dict(encoder.named_parameters()), **head}
        with second_order_attention(create_graph):  # fused attention kernels have no double backward
            fast, _ = inner_loop(encoder.bind(episode.support, start), start, 3, 0.0, create_graph)
        loss = encoder.bind(episode.query, start)(fast).loss
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(encoder.parameters()))])

    plain_loss = F.cross_entropy(
        F.linear(encoder(episode.query), head["head.weight"], head["head.bias"]), episode.query["label"]
    )
    plain = torch.cat([g.flatten() for g in torch.autograd.grad(plain_loss, list(encoder.parameters()))])
    assert plain.abs().max() > 1e-3 and len(names) == len(list(encoder.parameters()))
    torch.testing.assert_close(meta_grad(True), plain)
    torch.testing.assert_close(meta_grad(False), plain)


@pytest.mark.parametrize("steps", [1, 2])
def test_a_reptile_step_at_outer_lr_one_is_plain_sgd_on_the_episode(steps):
    """Reptile's meta-gradient is start - adapted: an outer SGD step at lr 1 lands where `steps` SGD steps on the
    whole episode (from a fresh zero head) land. With one step the zero head passes no gradient to the encoder, so
    nothing moves; with two it does."""
    backbone = tiny_backbone(torch.float64)
    reference, original = copy.deepcopy(backbone), copy.deepcopy(backbone)
    reptile = algorithm("reptile", backbone, adapt="all", inner_steps=steps, inner_lr=0.1)
    episode = random_episode()
    reptile.meta_gradients([episode])
    with torch.no_grad():
        for p in reptile.learner.parameters():
            p.sub_(p.grad)

    encoder = Classifier(reference, "head", 1)
    head = torch.nn.Linear(8, 3).double()
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    sgd = torch.optim.SGD([*encoder.parameters(), *head.parameters()], lr=0.1)
    for _ in range(steps):
        sgd.zero_grad()
        F.cross_entropy(head(encoder(episode.whole())), episode.whole()["label"]).backward()
        sgd.step()
    for (name, got), want in zip(reptile.learner.named_parameters(), encoder.parameters(), strict=True):
        torch.testing.assert_close(got, want, msg=name)
    moved = max(float((a - b).abs().max()) for a, b in zip(reference.parameters(), original.parameters(), strict=True))
    assert (moved > 1e-6) == (steps > 1)


@pytest.mark.parametrize("name", ["maml", "fomaml", "multitask", "protonet", "finetune"])
def test_neither_the_inner_loop_nor_meta_test_adaptation_changes_the_module(name):
    settings = {"adapt": "top_k_blocks"} if name in ("maml", "fomaml") else {}
    algo = algorithm(name, tiny_backbone(), **settings)
    before = {k: v.clone() for k, v in algo.state_dict().items()}
    episode = random_episode()
    if algo.meta_trains:
        algo.episode_loss(episode)
    algo.score(episode, 3, 0.5)
    for key, value in algo.state_dict().items():
        torch.testing.assert_close(value, before[key], msg=key)


def test_reptile_leaves_the_parameters_alone_and_only_writes_their_gradients():
    algo = algorithm("reptile", tiny_backbone(), adapt="all", inner_steps=3, inner_lr=0.1)
    before = {k: v.clone() for k, v in algo.state_dict().items()}
    algo.meta_gradients([random_episode(), random_episode(seed=1)])
    assert all(torch.equal(v, before[k]) for k, v in algo.state_dict().items())
    assert all(p.grad is not None for p in algo.parameters())


def test_adapting_the_top_blocks_adapts_only_those():
    start = Classifier(tiny_backbone(), "top_k_blocks", 1).start(random_episode(), detach=True)
    adapted = [n for n in start if not n.startswith("head.")]
    top = ("backbone.stack.blocks.1.", "backbone.stack.final_norm.")
    assert adapted and all(n.startswith(top) for n in adapted)
    assert any(n.startswith("backbone.stack.blocks.1.") for n in adapted)
    assert {"head.weight", "head.bias"} <= set(start)


def test_maml_learns_its_inner_learning_rates_when_asked():
    maml = algorithm("maml", tiny_backbone(), learn_inner_lr=True, inner_lr=0.3)
    maml.episode_loss(random_episode())[0].backward()
    assert all(p.grad is not None and p.grad.abs() > 0 for p in maml.log_lrs.values())
    assert set(maml.inner_lrs()) == {"head.weight", "head.bias"}


def test_meta_training_improves_the_query_loss_on_a_toy_problem():
    """A few outer steps of MAML on the class-marker episodes lower the query loss after adaptation."""
    maml = algorithm("maml", tiny_backbone(), inner_steps=3, inner_lr=0.5)
    optimiser = torch.optim.Adam(maml.parameters(), lr=3e-3)
    episodes = [random_episode(seed=s) for s in range(8)]
    first = torch.stack([maml.episode_loss(e)[0] for e in episodes]).mean().item()
    for step in range(60):
        optimiser.zero_grad()
        maml.meta_gradients(episodes[step % 8 : step % 8 + 1])
        optimiser.step()
    last = torch.stack([maml.episode_loss(e)[0] for e in episodes]).mean().item()
    assert last < first - 0.2


def test_every_algorithm_has_a_config_file():
    from pathlib import Path

    conf = Path(__file__).resolve().parents[1] / "conf" / "meta"
    assert {p.stem for p in conf.glob("*.yaml")} == set(available_algorithms())


# --- episodes ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic(tokenizer):
    cfg = EpisodeConfig(examples_per_class=20, max_length=32)
    texts = class_texts(cfg)
    return cfg, split_pools(cfg, texts), EncodedClasses(texts, tokenizer, cfg.max_length)


def test_synthetic_episodes_have_disjoint_pools_of_the_world_terms(synthetic):
    cfg, pools, _ = synthetic
    train, val, test = map(set, (pools.train, pools.val, pools.test))
    assert not train & val and not train & test and not val & test
    assert train | val | test == set(TERMS) and len(TERMS) >= 60
    assert (len(train), len(val), len(test)) == (152, 51, 50)


def test_an_episode_has_the_right_shapes_and_is_a_function_of_seed_pool_and_index(synthetic):
    cfg, pools, encoded = synthetic
    episode = sample_episode(cfg, pools, encoded, 0, "test", 7)
    n_s, n_q = cfg.n_way * cfg.k_shot, cfg.n_way * cfg.q_query
    assert episode.support["input_ids"].shape[0] == n_s and episode.query["input_ids"].shape[0] == n_q
    assert episode.support["label"].tolist() == [i for i in range(cfg.n_way) for _ in range(cfg.k_shot)]
    assert set(episode.classes) <= set(pools.test) and len(set(episode.classes)) == cfg.n_way
    assert bool(episode.support["padding_mask"].sum(1).eq(episode.support["n_real"]).all())
    again = sample_episode(cfg, pools, encoded, 0, "test", 7)
    assert again.classes == episode.classes and torch.equal(again.query["input_ids"], episode.query["input_ids"])
    other = sample_episode(cfg, pools, encoded, 1, "test", 7)
    assert other.classes != episode.classes or not torch.equal(other.query["input_ids"], episode.query["input_ids"])


def test_labels_are_re_permuted_every_episode(synthetic):
    """The same class gets different labels in different episodes (no class-specific head can be learned)."""
    cfg, pools, encoded = synthetic
    seen: dict[str, set[int]] = {}
    for index in range(200):
        for label, name in enumerate(sample_episode(cfg, pools, encoded, 0, "train", index).classes):
            seen.setdefault(name, set()).add(label)
    assert max(len(labels) for labels in seen.values()) == cfg.n_way


def test_a_class_with_too_few_examples_is_refused_naming_it_or_dropped_on_request(tmp_path):
    rows = ["text,label"] + [f"sentence {i} about cats,cat" for i in range(20)]
    rows += [f"sentence {i} about dogs,dog" for i in range(20)] + ["one bird,bird", "two birds,bird"]
    rows += [f"sentence {i} about class {c},c{c}" for c in range(12) for i in range(16)]
    path = tmp_path / "intents.csv"
    path.write_text("\n".join(rows) + "\n")
    cfg = EpisodeConfig(source="files", name="files", train_file=str(path), n_way=3, k_shot=5, q_query=10)
    with pytest.raises(
        InputError, match=r"1 class\(es\) have fewer than k_shot \+ q_query = 15 examples: 'bird' \(2\)"
    ):
        split_pools(cfg, class_texts(cfg))
    cfg.drop_small_classes = True
    pools = split_pools(cfg, class_texts(cfg))
    assert pools.dropped == {"bird": 2} and "bird" not in pools.train + pools.val + pools.test


def test_a_pool_smaller_than_n_way_is_refused_naming_the_pool():
    cfg = EpisodeConfig(n_way=30)
    texts = {f"class{i}": ["x"] * 20 for i in range(60)}
    with pytest.raises(InputError, match=r"the meta-val pool has 12 classes of 60, fewer than episodes.n_way=30"):
        split_pools(cfg, texts)


def test_cloze_classes_are_words_with_their_sentences_masked(tmp_path):
    text = " ".join(f"The {w} stood by the river number {i}." for w in ("heron", "willow") for i in range(12))
    path = tmp_path / "corpus.txt"
    path.write_text(text + " The river is long and wide today.")
    classes = cloze_classes([path], needed=10, skip_frequent=3, max_classes=10)
    assert {"heron", "willow"} <= set(classes)
    assert all("[MASK]" in s and "heron" not in s.lower() for s in classes["heron"])
    with pytest.raises(InputError, match="no word outside the 3 most frequent occurs in 50 sentences"):
        cloze_classes([path], needed=50, skip_frequent=3, max_classes=10)


def test_episode_config_refusals_name_the_setting(tmp_path):
    with pytest.raises(InputError, match="episodes.source=files needs episodes.train_file"):
        EpisodeConfig(source="files").validate()
    with pytest.raises(InputError, match="episodes.files is for episodes.source=cloze"):
        EpisodeConfig(files=["a.txt"]).validate()
    with pytest.raises(InputError, match="must be in \\(0, 1\\) and leave tasks for meta-test"):
        EpisodeConfig(train_fraction=0.8, val_fraction=0.2).validate()
    with pytest.raises(InputError, match="meta=reptile moves the starting weights"):
        algorithm_class("reptile").parse_config({"name": "reptile", "adapt": "head"})
