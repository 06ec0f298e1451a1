"""Preference pairs from the synthetic world for offline DPO: `python experiments/synthetic_pairs.py --out pairs.jsonl`.

One pair per person: the prompt "<name> said that <she/he> was", the chosen continuation a positive feeling about
one of their topic's events, the rejected one a negative feeling about the same event (the world's own words), so
the preference is a style that carries over to held-out people.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from lmlab.data.synthetic import FEELINGS, World


def pairs(world: World) -> list[dict[str, str]]:
    rows = []
    for i, person in enumerate(world.people):
        rng = random.Random(f"{world.seed}:pairs:{i}")
        pronoun = "she" if person.gender == "female" else "he"
        event = rng.choice(("festival", "meeting", "match", "exhibition", "conference", "concert"))
        rows.append(
            {
                "prompt": f"{person.name} said that {pronoun} was",
                "chosen": f"{rng.choice(FEELINGS['positive'])} about the {event}.",
                "rejected": f"{rng.choice(FEELINGS['negative'])} about the {event}.",
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--world-seed", type=int, default=1234)
    args = parser.parse_args()
    rows = pairs(World(args.world_seed))
    args.out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"wrote {len(rows)} preference pairs to {args.out}")


if __name__ == "__main__":
    main()
