"""Deterministic benchmark corpus: short English-like sentences (5-40 words)."""

from __future__ import annotations

import random

_WORDS = (
    "the a model server request batch token embedding vector query document search fast slow "
    "engine queue thread python torch grpc stream client latency throughput river mountain city "
    "weather market price energy data science learning network image text language small large "
    "runs returns computes encodes reads writes sends waits measures improves reduces keeps"
).split()


def sentences(n: int, seed: int = 0, min_words: int = 5, max_words: int = 40) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(min_words, max_words)
        words = [rng.choice(_WORDS) for _ in range(k)]
        out.append(" ".join(words).capitalize() + rng.choice([".", "?", "!"]))
    return out
