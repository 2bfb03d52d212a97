"""Every random draw of a run comes from a generator seeded by (run seed, step, stream).

So a step's data, timesteps, noise and patch position depend on nothing but the seed and the step:
a resumed run draws exactly what an uninterrupted one would, whatever happened before. The global
torch generator is reseeded the same way at every step, for the randomness inside libraries.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *parts: object) -> int:
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def generator(seed: int, *parts: object) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, *parts))
