"""EMA of the generator's weights, as diffusers' ``EMAModel`` computes it.

At every step ``step`` after the optimiser step: if ``step < start``, the EMA copies the weights; else, if
``(step - start) % every == 0``, it is updated with ``ema -= (1 - d) * (ema - weights)``, where for the
``s``-th update (``s`` counted from 0):

- ``warmup=True`` (the default, diffusers' ``EMAModel(decay=...)``): ``d = 0`` for ``s = 0`` (the first update
  copies) and ``d = min(decay, (1 + s) / (10 + s))`` after -- the EMA follows the young model closely and
  settles at ``decay`` (0.999 from about 9,000 updates on);
- ``warmup=False``: ``d = decay`` from the first update, so the random initial weights fade slowly
  (``decay ** n`` of them remain after n updates: 37 % after 1,000 at 0.999).

Floating-point parameters and buffers are averaged; other buffers are copied. ``updates`` (the ``s`` of
the next update) is part of a checkpoint.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay(decay: float, update: int, warmup: bool) -> float:
    """The decay of update number ``update`` (0 = the first)."""
    if not warmup:
        return decay
    if update <= 0:
        return 0.0
    return min(decay, (1 + update) / (10 + update))


class Ema:
    def __init__(self, model: nn.Module, decay: float, start: int = 0, every: int = 1, warmup: bool = True):
        self.decay, self.start, self.every, self.warmup = decay, start, every, warmup
        self.updates = 0
        self.model = copy.deepcopy(model).requires_grad_(False).eval()

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        if step < self.start:
            self.model.load_state_dict(model.state_dict())
            return
        if (step - self.start) % self.every:
            return
        one_minus = 1.0 - ema_decay(self.decay, self.updates, self.warmup)
        self.updates += 1
        ema_state = self.model.state_dict()
        for name, value in model.state_dict().items():
            target = ema_state[name]
            if target.dtype.is_floating_point:
                target.sub_(one_minus * (target - value.detach()))
            else:
                target.copy_(value)

    def state(self) -> dict:
        return {"updates": self.updates}

    def restore(self, state: dict) -> None:
        self.updates = int(state["updates"])
