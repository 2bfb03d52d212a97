"""EMA of the generator's weights.

At every step ``s`` after the optimiser step: if ``s < start``, the EMA copies the weights; else, if
``(s - start) % every == 0``, ``ema = decay * ema + (1 - decay) * weights`` (parameters and buffers
that are floating point; others are copied).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class Ema:
    def __init__(self, model: nn.Module, decay: float, start: int = 0, every: int = 1):
        self.decay, self.start, self.every = decay, start, every
        self.model = copy.deepcopy(model).requires_grad_(False).eval()

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        if step < self.start:
            self.model.load_state_dict(model.state_dict())
            return
        if (step - self.start) % self.every:
            return
        ema_state = self.model.state_dict()
        for name, value in model.state_dict().items():
            target = ema_state[name]
            if target.dtype.is_floating_point:
                target.mul_(self.decay).add_(value.detach(), alpha=1 - self.decay)
            else:
                target.copy_(value)
