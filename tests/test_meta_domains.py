"""Meta-learning a language model over text domains ("MetaGPT"): the domain episodes (pools, determinism, what the
support and query hold, refusals), the language-model learner (its loss is causal LM's, its second-order
meta-gradient matches finite differences, adaptation never mutates the module) and which algorithms accept it."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lmlab.data.blocks import Block
from lmlab.data.config import WorldConfig
from lmlab.data.synthetic import World
from lmlab.data.tokenizer import PAD
from lmlab.errors import InputError
from lmlab.heads import IGNORE
from lmlab.meta.algorithms import algorithm_class
from lmlab.meta.domains import DomainConfig, DomainEpisodes, lm_batch
from lmlab.meta.episodes import Episode
from lmlab.meta.learners import LanguageModel
from lmlab.models import Backbone, ModelConfig
from lmlab.objectives.clm import CausalLM, CLMConfig

from .meta_helpers import VOCAB, assert_meta_gradient_matches_finite_differences, tiny_backbone


def text_episode(seed: int = 0) -> Episode:
    """A domain whose rows repeat one random 'fact' sequence: adapting on the support makes the query predictable."""
    g = torch.Generator().manual_seed(seed)
    fact = torch.randint(5, VOCAB, (6,), generator=g).tolist()
    rows = [[*torch.randint(5, VOCAB, (2,), generator=g).tolist(), *fact][: 3 + i] for i in range(5)]
    return Episode("train", 0, ["domain"], lm_batch(rows[:3], 0), lm_batch(rows[3:], 0))


def algorithm(name: str, backbone: Backbone, **settings):
    cls = algorithm_class(name)
    return cls(cls.parse_config({"name": name, "adapt": "all", **settings}), backbone, ["d0", "d1"], "domains")


@pytest.fixture(scope="module")
def people(tokenizer) -> DomainEpisodes:
    return DomainEpisodes(DomainConfig(world=WorldConfig(seed=4321, people=30), max_length=64), tokenizer)


def test_people_domains_have_disjoint_pools_and_episodes_are_functions_of_seed_pool_and_index(people):
    pools = people.pools
    assert not set(pools.train) & set(pools.val) and not set(pools.val) & set(pools.test)
    assert (len(pools.train), len(pools.val), len(pools.test)) == (18, 6, 6)
    episode = people.episode(0, "test", 3)
    assert episode.classes[0] in pools.test
    assert episode.support["input_ids"].shape[0] == 4 and episode.query["input_ids"].shape[0] == 2
    again, other = people.episode(0, "test", 3), people.episode(1, "test", 3)
    assert torch.equal(again.support["input_ids"], episode.support["input_ids"])
    assert not torch.equal(other.query["input_ids"][:, :5], episode.query["input_ids"][:, :5])


def test_support_and_query_are_different_documents_about_the_same_unseen_person(people, tokenizer):
    """The facts to learn are in both: every row names the person; the world is not the pretraining world's."""
    episode = people.episode(0, "train", 0)
    person = people.world.people[people.domains[episode.classes[0]]]
    decode = tokenizer.tokenizer.decode
    support = [decode(r.tolist()) for r in episode.support["input_ids"]]
    query = [decode(r.tolist()) for r in episode.query["input_ids"]]
    assert all(person.name.lower() in text and str(person.age) in text for text in support + query)
    assert not set(query) & set(support)
    assert person.name not in {p.name for p in World(1234).people}


def test_lm_batch_predicts_the_next_token_within_each_row_and_never_padding():
    batch = lm_batch([[5, 6, 7], [8, 9]], pad_id=0)
    assert batch["labels"].tolist() == [[6, 7, IGNORE], [9, IGNORE, IGNORE]]
    assert batch["padding_mask"].tolist() == [[True, True, True], [True, True, False]]
    whole = Episode("train", 0, ["d"], batch, lm_batch([[1, 2, 3, 4]], 0)).whole()
    assert whole["labels"][:2, 3].tolist() == [IGNORE, IGNORE]  # widened with IGNORE, not token 0


def test_the_language_model_learner_scores_like_the_causal_lm_objective(tokenizer):
    """Its loss on a batch is exactly objective=clm's on the same tokens: a meta-trained LM is a causal LM."""
    backbone = Backbone(ModelConfig(vocab_size=tokenizer.vocab_size, layout="decoder", n_layers=1, d_model=16)).eval()
    learner = LanguageModel(backbone, "all", 1)
    ids = np.array([7, 8, 9, 10, 11, tokenizer.token_id(PAD)])
    clm = CausalLM(CLMConfig(), tokenizer)
    example = clm.transform(Block.of(ids, 5), np.random.default_rng(0))
    batch = {
        "input_ids": torch.tensor(example["input_ids"])[None],
        "labels": torch.tensor(example["labels"])[None],
        "padding_mask": torch.tensor(ids != tokenizer.token_id(PAD))[None],
    }
    ours = learner.plain(batch)
    assert ours is not None
    theirs = clm.forward(backbone, clm.build_head(backbone.cfg), batch)
    torch.testing.assert_close(ours.loss, theirs.loss)
    assert ours.total == int(theirs.n_targets) == 4


def test_the_second_order_meta_gradient_of_a_language_model_equals_finite_differences():
    maml = algorithm("maml", tiny_backbone(torch.float64, layout="decoder"), inner_steps=2, inner_lr=0.5)
    assert_meta_gradient_matches_finite_differences(maml, text_episode())


@pytest.mark.parametrize("name", ["maml", "fomaml", "reptile", "multitask", "finetune"])
def test_language_model_adaptation_lowers_the_query_loss_and_never_changes_the_module(name):
    algo = algorithm(name, tiny_backbone(layout="decoder"), inner_lr=0.3)
    before = {k: v.clone() for k, v in algo.state_dict().items()}
    episode = text_episode()
    if algo.meta_trains:
        algo.meta_gradients([episode])
    score = algo.score(episode, 5, 0.3)
    for key, value in algo.state_dict().items():
        torch.testing.assert_close(value, before[key], msg=key)
    assert len(score.query_losses) == 6 and score.query_losses[-1] < score.query_losses[0]
    assert score.total == int((episode.query["labels"] != IGNORE).sum())


def test_the_multitask_baseline_of_a_language_model_is_plain_causal_lm_on_the_whole_episode():
    algo = algorithm("multitask", tiny_backbone(layout="decoder"))
    episode = text_episode()
    loss, _ = algo.episode_loss(episode)
    expected = algo.learner(episode.whole()).loss
    torch.testing.assert_close(loss, expected)
    assert algo.classifier is None


def test_what_cannot_learn_from_text_domains_is_refused_by_name():
    with pytest.raises(InputError, match="meta=protonet needs classes episodes; these episodes are domains"):
        cls = algorithm_class("protonet")
        cls(cls.parse_config({"name": "protonet"}), tiny_backbone(layout="decoder"), ["d0"], "domains")
    with pytest.raises(InputError, match="must have model.layout=decoder .* got encoder"):
        algorithm("maml", tiny_backbone())
    with pytest.raises(InputError, match="meta.adapt=head: a language model's head is its token embedding"):
        algorithm("maml", tiny_backbone(layout="decoder"), adapt="head")


def test_domain_config_refusals_name_the_setting(tmp_path, tokenizer):
    with pytest.raises(InputError, match="episodes.source=files needs episodes.files"):
        DomainConfig(source="files").validate()
    with pytest.raises(InputError, match="episodes.files is for episodes.source=files"):
        DomainConfig(files=["a.txt"]).validate()
    short = tmp_path / "short.txt"
    short.write_text("A few words only.")
    with pytest.raises(InputError, match=r"episodes.files\[0\]: .*short.txt has \d+ tokens, fewer than .* = 768"):
        DomainEpisodes(DomainConfig(source="files", files=[str(short)]), tokenizer)


def test_file_domains_read_consecutive_windows_support_first(tmp_path, tokenizer):
    paths = []
    for i in range(5):
        path = tmp_path / f"domain{i}.txt"
        path.write_text(" ".join(f"Line {k} of file {i} says something new." for k in range(200)))
        paths.append(str(path))
    source = DomainEpisodes(
        DomainConfig(source="files", files=paths, max_length=16, support_rows=2, query_rows=1), tokenizer
    )
    assert sorted(source.pools.train + source.pools.val + source.pools.test) == sorted(paths)
    episode = source.episode(0, "train", 0)
    tokens = source.file_tokens[episode.classes[0]]
    rows = torch.cat([episode.support["input_ids"], episode.query["input_ids"]]).flatten().numpy()
    start = int(np.flatnonzero(np.all(np.lib.stride_tricks.sliding_window_view(tokens, 48) == rows, axis=1))[0])
    assert np.array_equal(tokens[start : start + 48], rows)
    copy.deepcopy(source)  # picklable state for dataloader workers
