"""The synthetic world: deterministic, consistent, and labelled for downstream tasks."""

from __future__ import annotations

import re

from lmlab.data.synthetic import _TERMS, _TOPICS, SENTIMENTS, TOPICS, World


def test_documents_are_a_pure_function_of_seed_and_index():
    assert World(3).document(17) == World(3).document(17)
    assert World(3).document(17) != World(4).document(17)
    assert World(3).document(17) != World(3).document(18)


def test_labels_match_the_text():
    world = World(0)
    for doc in world.documents(0, 200):
        assert doc.topic in TOPICS and doc.sentiment in SENTIMENTS
        for start, end, kind in doc.entities:
            assert kind in {"PER", "LOC", "ORG"}
            assert doc.text[start:end].strip() == doc.text[start:end] != ""
        for question, answer, start in doc.facts:
            assert doc.text[start : start + len(answer)] == answer
            assert question.endswith("?")
        assert doc.headline


def test_pronouns_agree_with_the_person():
    world = World(0)
    for i in range(200):
        doc = world.document(i)
        first = doc.text[doc.entities[0][0] : doc.entities[0][1]].split()[0]
        person = next(p for p in world.people if p.name == doc.text[: len(p.name)] and p.first == first)
        wrong = {"female": r"\b(he|his|Mr\.)\b", "male": r"\b(she|her|Ms\.)\b"}[person.gender]
        assert not re.search(wrong, doc.text, flags=re.IGNORECASE), doc.text


def test_sentiment_is_balanced_and_topics_all_appear():
    docs = World(1).documents(0, 1000)
    positive = sum(d.sentiment == "positive" for d in docs)
    assert 400 < positive < 600
    assert {d.topic for d in docs} == set(TOPICS)


def test_topic_terms_appear_in_documents_of_their_topic_only():
    world = World(3)
    owner = {term: topic for topic, terms in _TERMS.items() for term in terms}
    seen = set()
    for doc in world.documents(0, 400):
        words = set(re.findall(r"[a-z]+", doc.text))
        assert {owner[w] for w in words if w in owner} <= {doc.topic}
        seen |= words & owner.keys()
    assert len(seen) > 0.8 * len(owner)  # the corpus uses the whole vocabulary


def test_snippets_and_mentions_hold_one_topic_clue_or_none():
    world = World(3)
    owner = {term: topic for topic, terms in _TERMS.items() for term in terms}
    topic_words = {w for spec in _TOPICS.values() for w in (*spec["jobs"], *spec["events"])} | owner.keys()
    for i in range(200):
        snippet = world.snippet(i)
        [term] = [w for w in re.findall(r"[a-z]+", snippet.text) if w in owner]
        assert owner[term] == snippet.topic
        mention = world.mention(i)
        assert not set(re.findall(r"[a-z]+", mention.text.lower())) & topic_words
        person = next(p for p in world.people if mention.text.startswith(p.name))
        assert mention.topic == person.topic and mention.entities[0] == (0, len(person.name), "PER")
    assert {world.snippet(i).topic for i in range(200)} == set(TOPICS)
