"""Reproducible randomness: one random stream per (seed, proxy, toxic, connection ordinal).

Why this shape: upstream draws from one process-global generator, so the outcome for a connection depends on how
many draws every other connection made before it - which is why its ``-seed`` flag cannot reproduce a run. Here each
toxic on each connection gets its own generator derived from a hash of those four values; the first draw decides
toxicity (``draw < toxicity``), the following ones feed jitter and slicer cuts. Same seed, same proxy and toxic
names, same connection ordinal (1-based count of connections the proxy accepted) -> same choices, whatever
else runs concurrently.
"""

from __future__ import annotations

import hashlib
import random


def toxic_rng(seed: int, proxy: str, toxic: str, ordinal: int) -> random.Random:
    """The generator for one toxic on one connection."""
    key = f"{seed}\x00{proxy}\x00{toxic}\x00{ordinal}".encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:16], "big"))


def toxicity_draw(seed: int, proxy: str, toxic: str, ordinal: int) -> float:
    """The uniform draw in [0, 1) that decides whether ``toxic`` acts on connection ``ordinal``."""
    return toxic_rng(seed, proxy, toxic, ordinal).random()
