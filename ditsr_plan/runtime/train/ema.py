"""EMA of the generator's trained weights, as diffusers' ``EMAModel`` computes it.

At every step ``step`` after the optimiser step: if ``step < start``, the EMA copies the weights; else, if
``(step - start) % every == 0``, it is updated with ``ema -= (1 - d) * (ema - weights)``, where for the
``s``-th update (``s`` counted from 0):

- ``warmup=True`` (the default, diffusers' ``EMAModel(decay=...)``): ``d = 0`` for ``s = 0`` (the first update
  copies) and ``d = min(decay, (1 + s) / (10 + s))`` after -- the EMA follows the young model closely and
  settles at ``decay`` (0.999 from about 9,000 updates on);
- ``warmup=False``: ``d = decay`` from the first update, so the random initial weights fade slowly
  (``decay ** n`` of them remain after n updates: 37 % after 1,000 at 0.999).

Only the parameters that train are averaged (the frozen base of a LoRA fine-tune needs no second copy);
``applied(model)`` puts the averages into the model for validation or export and restores its weights
after. ``updates`` (the ``s`` of the next update) is part of a checkpoint.
"""

from __future__ import annotations

import contextlib

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
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def _trained(self, model: nn.Module):
        return ((n, p) for n, p in model.named_parameters() if n in self.shadow)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        if step < self.start:
            for name, param in self._trained(model):
                self.shadow[name].copy_(param)
            return
        if (step - self.start) % self.every:
            return
        one_minus = 1.0 - ema_decay(self.decay, self.updates, self.warmup)
        self.updates += 1
        for name, param in self._trained(model):
            target = self.shadow[name]
            target.sub_(one_minus * (target - param.detach()))

    @contextlib.contextmanager
    def applied(self, model: nn.Module):
        """``model`` with the EMA weights, for the duration of the block; its own weights restored after."""
        kept = {}
        with torch.no_grad():
            for name, param in self._trained(model):
                kept[name] = param.detach().clone()
                param.copy_(self.shadow[name])
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, param in self._trained(model):
                    param.copy_(kept[name])

    def state(self) -> dict:
        return {"updates": self.updates}

    def restore(self, state: dict) -> None:
        self.updates = int(state["updates"])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, value in tensors.items():
            self.shadow[name].copy_(value)
