"""Traffic policy: which variant serves a request, and which shadows see it."""

from __future__ import annotations

import bisect
import hashlib
import random
from dataclasses import dataclass

from pipelines.spec import TrafficSpec


@dataclass(frozen=True)
class TrafficPolicy:
    """A compiled TrafficSpec: cumulative weights for O(log n) picks, stable key hashing."""

    variants: tuple[str, ...]
    cumulative: tuple[float, ...]
    key: str | None
    shadows: tuple[str, ...]

    @classmethod
    def compile(cls, spec: TrafficSpec) -> TrafficPolicy:
        live = [(v, w) for v, w in sorted(spec.weights.items()) if w > 0]
        total = sum(w for _, w in live)
        running = 0.0
        cumulative = []
        for _, w in live:
            running += w / total
            cumulative.append(running)
        cumulative[-1] = 1.0
        return cls(tuple(v for v, _ in live), tuple(cumulative), spec.key, tuple(spec.shadows))

    def pick(self, split_key: str | None = None) -> str:
        """The variant for one request: by hash of the key when given, else at random by weight."""
        if len(self.variants) == 1:
            return self.variants[0]
        point = key_point(split_key) if split_key is not None else random.random()
        return self.variants[min(bisect.bisect_right(self.cumulative, point), len(self.variants) - 1)]


def key_point(key: str) -> float:
    """A key's fixed point in [0, 1): the same on every replica and after restarts (not hash())."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
