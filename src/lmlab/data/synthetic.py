"""The synthetic world: an offline corpus with real, learnable structure, generated from a seed.

A `World` holds generated people, places and organisations whose attributes stay fixed. Each document
is about one person and states facts consistent with the world, so context predicts masked words
(a pronoun agrees with the person, a city mentioned once is mentioned again). Sentences come from
varied templates with subject-verb agreement. Every document also carries the truth needed for
downstream tasks: a topic and a sentiment (classification), entity spans with types (NER), questions
with answer spans (extractive QA) and a headline (seq2seq).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

GENERATOR_VERSION = 2

_SYLLABLES = (
    "ka ro mi ten var lo sa bel dor ith un qua zel mar fen ost ri an el tor "
    "vi sul pen ga ne hal bri cor dun ly mo sey tha ver wen yor isk ae lin"
).split()
_FIRST_NAMES = {
    "female": "Amara Beatrix Celine Dalia Elena Freya Greta Helena Ilse Jana Kira Lena Mira Nadia Olga "
    "Petra Rosa Sofia Tamsin Vera".split(),
    "male": "Anton Bruno Caspar Dario Emil Felix Gustav Hugo Ivo Jonas Karl Lukas Milo Nils Oskar "
    "Pavel Rafael Stefan Tobias Viktor".split(),
}
_PRONOUNS = {"female": ("she", "her", "her", "Ms."), "male": ("he", "him", "his", "Mr.")}
_COUNTRIES = ["Averland", "Brisca", "Corvany", "Delmora", "Estany", "Feyland", "Galdonia", "Hestria"]
_PLACE_KINDS = ("city", "town", "port", "village")
_ORG_SUFFIX = {
    "sports": ("United", "Rovers", "Athletic"),
    "business": ("Group", "Holdings", "Trading"),
    "science": ("Institute", "Labs", "Observatory"),
    "politics": ("Party", "Council", "Alliance"),
    "arts": ("Theatre", "Orchestra", "Gallery"),
}
_TOPICS: dict[str, dict[str, Any]] = {
    "sports": {
        "jobs": ("footballer", "coach", "runner", "swimmer", "referee"),
        "events": ("final", "derby", "championship", "tournament", "race"),
        "pos": (
            "won the {event} with a late goal",
            "set a new record in the {event}",
            "led the team to victory",
        ),
        "neg": (
            "lost the {event} after a poor start",
            "was injured early in the {event}",
            "missed a penalty",
        ),
        "head_pos": "wins",
        "head_neg": "loses",
    },
    "business": {
        "jobs": ("banker", "trader", "manager", "accountant", "founder"),
        "events": ("merger", "product launch", "quarterly report", "takeover", "sale"),
        "pos": (
            "announced record profits after the {event}",
            "doubled the share price",
            "signed a major deal",
        ),
        "neg": (
            "reported heavy losses after the {event}",
            "cut hundreds of jobs",
            "was fined by the regulator",
        ),
        "head_pos": "celebrates",
        "head_neg": "regrets",
    },
    "science": {
        "jobs": ("chemist", "physicist", "biologist", "astronomer", "engineer"),
        "events": ("experiment", "expedition", "survey", "trial", "study"),
        "pos": (
            "made a breakthrough in the {event}",
            "discovered a new species",
            "published a celebrated paper",
        ),
        "neg": ("had to abandon the {event}", "lost years of data", "saw the grant withdrawn"),
        "head_pos": "hails",
        "head_neg": "abandons",
    },
    "politics": {
        "jobs": ("senator", "mayor", "minister", "diplomat", "campaigner"),
        "events": ("election", "debate", "referendum", "summit", "vote"),
        "pos": ("won the {event} by a wide margin", "passed a popular reform", "secured a peace agreement"),
        "neg": ("lost the {event} to a rival", "resigned after a scandal", "faced angry protests"),
        "head_pos": "wins",
        "head_neg": "loses",
    },
    "arts": {
        "jobs": ("painter", "violinist", "actor", "novelist", "sculptor"),
        "events": ("premiere", "exhibition", "festival", "concert", "tour"),
        "pos": ("received a standing ovation at the {event}", "won a national prize", "sold out every show"),
        "neg": ("was booed at the {event}", "cancelled the tour", "received terrible reviews"),
        "head_pos": "triumphs at",
        "head_neg": "stumbles at",
    },
}
TOPICS = tuple(_TOPICS)
# Each topic's own vocabulary, far larger than a few hundred labelled examples can cover: a model that knows these
# words' topics from pretraining reads a topic off text that a model trained from scratch has never seen.
_TERMS = {
    "sports": (
        "stadium",
        "goalkeeper",
        "midfield",
        "penalty",
        "trophy",
        "league",
        "striker",
        "defender",
        "jersey",
        "whistle",
        "scoreboard",
        "locker",
        "sprint",
        "marathon",
        "podium",
        "medal",
        "racket",
        "helmet",
        "offside",
        "dugout",
        "goalpost",
        "kickoff",
        "halftime",
        "tackle",
        "dribble",
        "relay",
        "hurdle",
        "javelin",
        "umpire",
        "wicket",
        "paddock",
        "fixture",
        "playoff",
        "semifinal",
        "stopwatch",
        "treadmill",
        "gym",
        "dumbbell",
        "volley",
        "rebound",
        "slalom",
        "sled",
        "rink",
        "puck",
        "scrum",
        "peloton",
        "saddle",
        "velodrome",
        "boxing",
        "wrestling",
    ),
    "business": (
        "invoice",
        "dividend",
        "shareholder",
        "portfolio",
        "revenue",
        "ledger",
        "audit",
        "budget",
        "forecast",
        "inventory",
        "warehouse",
        "supplier",
        "contract",
        "franchise",
        "startup",
        "venture",
        "investor",
        "loan",
        "mortgage",
        "inflation",
        "tariff",
        "logistics",
        "payroll",
        "pension",
        "bond",
        "stock",
        "equity",
        "valuation",
        "bankruptcy",
        "subsidiary",
        "boardroom",
        "spreadsheet",
        "marketing",
        "branding",
        "retail",
        "wholesale",
        "commodity",
        "currency",
        "broker",
        "asset",
        "liability",
        "overdraft",
        "turnover",
        "procurement",
        "consultancy",
        "acquisition",
        "cashflow",
        "receipt",
        "discount",
        "pricing",
    ),
    "science": (
        "microscope",
        "molecule",
        "telescope",
        "hypothesis",
        "laboratory",
        "enzyme",
        "genome",
        "protein",
        "electron",
        "neutron",
        "isotope",
        "bacteria",
        "virus",
        "fossil",
        "galaxy",
        "nebula",
        "comet",
        "orbit",
        "particle",
        "quantum",
        "reactor",
        "catalyst",
        "compound",
        "specimen",
        "equation",
        "theorem",
        "algorithm",
        "sensor",
        "satellite",
        "vaccine",
        "antibody",
        "neuron",
        "chromosome",
        "mutation",
        "ecosystem",
        "glacier",
        "volcano",
        "magnet",
        "laser",
        "circuit",
        "prototype",
        "spectrometer",
        "centrifuge",
        "beaker",
        "pipette",
        "thermometer",
        "radiation",
        "photon",
        "plasma",
        "crystal",
        "asteroid",
    ),
    "politics": (
        "parliament",
        "ballot",
        "constituency",
        "legislation",
        "coalition",
        "opposition",
        "cabinet",
        "treaty",
        "embassy",
        "senate",
        "congress",
        "manifesto",
        "policy",
        "amendment",
        "constitution",
        "veto",
        "lobby",
        "petition",
        "poll",
        "candidate",
        "incumbent",
        "governor",
        "ambassador",
        "sanction",
        "diplomacy",
        "republic",
        "monarchy",
        "democracy",
        "electorate",
        "caucus",
        "statute",
        "ministry",
        "delegation",
        "chancellor",
        "president",
        "premier",
        "councillor",
        "welfare",
        "rally",
        "propaganda",
        "censorship",
        "sovereignty",
        "immigration",
        "treasury",
        "mandate",
        "quorum",
        "filibuster",
        "impeachment",
        "bureaucracy",
        "envoy",
        "consulate",
    ),
    "arts": (
        "canvas",
        "easel",
        "palette",
        "brush",
        "sculpture",
        "melody",
        "symphony",
        "sonnet",
        "poem",
        "ballet",
        "opera",
        "choir",
        "chorus",
        "libretto",
        "screenplay",
        "rehearsal",
        "audition",
        "costume",
        "stage",
        "curtain",
        "encore",
        "museum",
        "portrait",
        "landscape",
        "fresco",
        "mural",
        "mosaic",
        "pottery",
        "ceramic",
        "tapestry",
        "sketch",
        "etching",
        "manuscript",
        "verse",
        "rhyme",
        "ballad",
        "sonata",
        "concerto",
        "overture",
        "harmony",
        "rhythm",
        "tempo",
        "chord",
        "piano",
        "cello",
        "flute",
        "trumpet",
        "harp",
        "anthology",
        "playwright",
        "choreography",
    ),
}
# Every topic term, sorted: the fine-grained classes of few-shot episodes (`World.term_sentence`).
TERMS = tuple(sorted(term for terms in _TERMS.values() for term in terms))
SENTIMENTS = ("negative", "positive")
FEELINGS = {
    "positive": ("delighted", "proud", "thrilled", "grateful", "hopeful"),
    "negative": ("disappointed", "furious", "worried", "ashamed", "exhausted"),
}
_CROWD = {
    "positive": ("happy", "excited", "impressed"),
    "negative": ("upset", "angry", "unhappy"),
}
_CLAIMS = {
    "positive": ("deserves the praise", "has earned the success", "made everyone proud"),
    "negative": ("deserves the criticism", "let everyone down", "should apologise"),
}
_GROUPS = ("fan", "colleague", "neighbour", "critic", "supporter", "friend")
_SMALL_TALK = ("weather", "traffic", "holidays", "prices", "news", "family", "garden", "dinner")
_TALK = (
    "Much of the talk was about the {}, the {} and the {}.",
    "People spoke about the {}, the {} and the {}.",
    "The {}, the {} and the {} were discussed at length.",
)
# A sentence about one term, said by or near a person in a place: {term} once, {talk} is small talk.
_TERM_SENTENCES = (
    "{person} spoke about the {term} in {place}.",
    "In {place}, {person} asked about the {talk} and the {term}.",
    "Nobody in {place} could stop talking about the {term}.",
    "{person} said the {term} mattered more than the {talk}.",
    "The {term} was all {person} wanted to discuss in {place}.",
    "After the {talk}, the talk in {place} turned to the {term}.",
    "{person} wrote a letter about the {term} and the {talk}.",
    "Everyone at the meeting in {place} had an opinion on the {term}.",
)


@dataclass(frozen=True)
class Place:
    name: str
    kind: str
    country: str


@dataclass(frozen=True)
class Organisation:
    name: str
    topic: str
    place: Place
    founded: int


@dataclass(frozen=True)
class Person:
    first: str
    last: str
    gender: str
    age: int
    topic: str
    job: str
    home: Place
    employer: Organisation

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"


@dataclass
class Document:
    text: str
    topic: str
    sentiment: str
    entities: list[tuple[int, int, str]] = field(default_factory=list)  # (start, end, PER|LOC|ORG)
    facts: list[tuple[str, str, int]] = field(default_factory=list)  # (question, answer, answer start)
    headline: str = ""


class _Writer:
    """Appends text while recording character spans of entity mentions."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.entities: list[tuple[int, int, str]] = []

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.length += len(text)

    def mark(self, text: str) -> int:
        """Append `text` and return where it starts (for answer spans)."""
        start = self.length
        self.add(text)
        return start

    def entity(self, text: str, kind: str) -> int:
        start = self.mark(text)
        self.entities.append((start, self.length, kind))
        return start

    def text(self) -> str:
        return "".join(self.parts)


def _proper_name(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(syllables)).capitalize()


class World:
    """Entities generated from `seed`; `document(index)` is a pure function of (seed, index)."""

    def __init__(self, seed: int, n_people: int = 300, n_places: int = 60, n_orgs: int = 80) -> None:
        self.seed = seed
        rng = random.Random(seed)
        self.places = [
            Place(_proper_name(rng, rng.choice((2, 3))), rng.choice(_PLACE_KINDS), rng.choice(_COUNTRIES))
            for _ in range(n_places)
        ]
        self.orgs = []
        for _ in range(n_orgs):
            topic = rng.choice(TOPICS)
            name = f"{_proper_name(rng, 2)} {rng.choice(_ORG_SUFFIX[topic])}"
            self.orgs.append(Organisation(name, topic, rng.choice(self.places), rng.randint(1850, 2015)))
        self.people = []
        for _ in range(n_people):
            gender = rng.choice(("female", "male"))
            topic = rng.choice(TOPICS)
            employers = [o for o in self.orgs if o.topic == topic] or self.orgs
            self.people.append(
                Person(
                    first=rng.choice(_FIRST_NAMES[gender]),
                    last=_proper_name(rng, rng.choice((2, 3))),
                    gender=gender,
                    age=rng.randint(19, 78),
                    topic=topic,
                    job=rng.choice(_TOPICS[topic]["jobs"]),
                    home=rng.choice(self.places),
                    employer=rng.choice(employers),
                )
            )

    def document(self, index: int) -> Document:
        rng = random.Random(f"{self.seed}:{index}")
        person = rng.choice(self.people)
        sentiment = rng.choice(SENTIMENTS)
        return _compose(rng, person, sentiment, rng.choice(self.places))

    def person_document(self, person: int, index: int) -> Document:
        """The `index`-th document about `self.people[person]` (each restates some of their facts: age, job, home,
        employer), a pure function of (seed, person, index)."""
        rng = random.Random(f"{self.seed}:person:{person}:{index}")
        sentiment = rng.choice(SENTIMENTS)
        return _compose(rng, self.people[person], sentiment, rng.choice(self.places))

    def documents(self, start: int, stop: int) -> list[Document]:
        return [self.document(i) for i in range(start, stop)]

    def snippet(self, index: int) -> Document:
        """One sentence whose only topic word is one of the topic's many terms ("People spoke about the weather,
        the ballot and the garden."): few labelled examples cover the vocabulary; a pretrained model knows them."""
        rng = random.Random(f"{self.seed}:snippet:{index}")
        topic = rng.choice(TOPICS)
        words = [rng.choice(_TERMS[topic]), *rng.sample(_SMALL_TALK, 2)]
        rng.shuffle(words)
        text = rng.choice(_TALK).format(*words)
        return Document(text, topic, "neutral")

    def mention(self, index: int) -> Document:
        """One sentence that names a person and says nothing about their work: its topic is world knowledge,
        held only by the documents about that person (the pretraining corpus), never by the sentence itself."""
        rng = random.Random(f"{self.seed}:mention:{index}")
        person = rng.choice(self.people)
        w = _Writer()
        w.entity(person.name, "PER")
        w.add(rng.choice((" was seen in ", " arrived in ", " spent the day in ", " is visiting ")))
        w.entity(rng.choice(self.places).name, "LOC")
        w.add(".")
        return Document(w.text(), person.topic, "neutral", w.entities)

    def term_sentence(self, term: str, index: int) -> str:
        """The `index`-th sentence about topic term `term`: its only topical word is the term, set among the world's
        people, places and small talk, so telling terms apart means reading one word of a varied sentence."""
        rng = random.Random(f"{self.seed}:term:{term}:{index}")
        template = rng.choice(_TERM_SENTENCES)
        person, place = rng.choice(self.people), rng.choice(self.places)
        return template.format(term=term, person=person.name, place=place.name, talk=rng.choice(_SMALL_TALK))


def _compose(rng: random.Random, p: Person, sentiment: str, venue: Place) -> Document:
    topic = _TOPICS[p.topic]
    subj, obj, poss, title = _PRONOUNS[p.gender]
    event = rng.choice(topic["events"])
    w = _Writer()
    facts: list[tuple[str, str, int]] = []

    def person_ref(capital: bool = True) -> None:
        """A later mention: the pronoun, or the title and surname (an entity mention)."""
        if rng.random() < 0.5:
            w.add(subj.capitalize() if capital else subj)
        else:
            w.add(f"{title} ")
            w.entity(p.last, "PER")

    w.entity(p.name, "PER")
    if rng.random() < 0.5:
        w.add(" is a ")
        age = w.mark(str(p.age))
        w.add(f"-year-old {p.job} from ")
        home = w.entity(p.home.name, "LOC")
        w.add(".")
    else:
        w.add(f", a {p.job} from ")
        home = w.entity(p.home.name, "LOC")
        w.add(", is ")
        age = w.mark(str(p.age))
        w.add(" years old.")
    facts.append((f"Where is {p.name} from?", p.home.name, home))
    facts.append((f"How old is {p.name}?", str(p.age), age))

    body = [_employer, _hometown, _event, _feeling, _crowd]
    rng.shuffle(body)
    body.remove(_event)
    body.insert(rng.randint(0, 1), _event)
    body = body[: rng.randint(3, len(body))]
    body.insert(rng.randint(1, len(body)), _talk)
    for sentence in body:
        w.add(" ")
        sentence(rng, w, p, sentiment, venue, event, person_ref, facts, (subj, obj, poss))
    headline_verb = topic["head_pos" if sentiment == "positive" else "head_neg"]
    headline = f"{p.name} {headline_verb} {event} in {venue.name}"
    return Document(w.text(), p.topic, sentiment, w.entities, facts, headline)


def _employer(rng, w, p, sentiment, venue, event, person_ref, facts, pronouns) -> None:
    person_ref()
    w.add(rng.choice((" works for ", " has worked for ", " is employed by ")))
    start = w.entity(p.employer.name, "ORG")
    if rng.random() < 0.5:
        w.add(", which is based in ")
        based = w.entity(p.employer.place.name, "LOC")
        facts.append((f"Where is {p.employer.name} based?", p.employer.place.name, based))
    else:
        w.add(f", founded in {p.employer.founded}")
    w.add(".")
    facts.append((f"Which organisation does {p.name} work for?", p.employer.name, start))


def _hometown(rng, w, p, sentiment, venue, event, person_ref, facts, pronouns) -> None:
    subj, obj, poss = pronouns
    w.add(f"{poss.capitalize()} home {p.home.kind}, ")
    w.entity(p.home.name, "LOC")
    w.add(", lies in ")
    w.entity(p.home.country, "LOC")
    w.add(".")


def _event(rng, w, p, sentiment, venue, event, person_ref, facts, pronouns) -> None:
    w.add(f"At the {event} in ")
    start = w.entity(venue.name, "LOC")
    w.add(", ")
    person_ref(capital=False)
    phrase = rng.choice(_TOPICS[p.topic]["pos" if sentiment == "positive" else "neg"])
    w.add(" " + phrase.format(event=event) + ".")
    facts.append((f"Where was the {event}?", venue.name, start))


def _feeling(rng, w, p, sentiment, venue, event, person_ref, facts, pronouns) -> None:
    subj, obj, poss = pronouns
    person_ref()
    feeling = rng.choice(FEELINGS[sentiment])
    w.add(f" said that {subj} was {feeling} about the {event}.")


def _crowd(rng, w, p, sentiment, venue, event, person_ref, facts, pronouns) -> None:
    """Subject-verb agreement: a singular or plural group with matching verb forms."""
    subj = pronouns[0]
    group = rng.choice(_GROUPS)
    mood = rng.choice(_CROWD[sentiment])
    claim = rng.choice(_CLAIMS[sentiment])
    if rng.random() < 0.5:
        w.add(f"One {group} is {mood} and says that {subj} {claim}.")
    else:
        w.add(f"Many {group}s are {mood} and say that {subj} {claim}.")


def _talk(rng, w, p, sentiment, venue, event, person_ref, facts, pronouns) -> None:
    w.add(rng.choice(_TALK).format(*rng.sample(_TERMS[p.topic], 3)))
