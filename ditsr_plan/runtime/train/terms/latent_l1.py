from __future__ import annotations

import torch

from .base import LossTerm, StepTensors


class LatentL1(LossTerm):
    """L1 between the reconstructed and the true x0 in latent space."""

    def forward(self, s: StepTensors) -> torch.Tensor:
        return (s.x0_hat.float() - s.x0.float()).abs().mean()
