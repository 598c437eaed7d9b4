"""Dolly-like random records for the scoring tests (importable from test modules and conftest)."""

import random

WORDS = "the a cat dog river city music water people time history world light".split()


def make_records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)

    def text(k):
        return " ".join(rng.choice(WORDS) for _ in range(k))

    return [
        {"instruction": text(rng.randint(2, 12)), "input": text(rng.randint(0, 20)) if i % 3 else "",
         "output": text(rng.randint(1, 30))}
        for i in range(n)
    ]
