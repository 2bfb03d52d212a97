from __future__ import annotations

import torch

from ditsr_plan.settings import schemas

from .base import LossTerm, StepTensors, TermContext


def min_snr_weight(snr: torch.Tensor, gamma: float, formula: str) -> torch.Tensor:
    """Per-sample Min-SNR weight for a v-prediction MSE.

    ``formula=v``: ``min(snr, gamma) / (snr + 1)``, the published form for v-prediction (Hang et al.
    2023; diffusers' ``--snr_gamma``). ``formula=eps``: ``min(snr, gamma) / snr``, what the reference
    scripts used. ``gamma=0`` turns the weighting off (weight 1).
    """
    if gamma == 0:
        return torch.ones_like(snr)
    clipped = torch.clamp(snr, max=gamma)
    return clipped / (snr + 1) if formula == "v" else clipped / snr


class VPred(LossTerm[schemas.VPred]):
    """MSE between predicted and true velocity, Min-SNR weighted per sample."""

    def __init__(self, name: str, settings: schemas.VPred, context: TermContext):
        super().__init__(name, settings, context)
        self.diffusion = context.diffusion

    def forward(self, s: StepTensors) -> torch.Tensor:
        per_sample = (s.v_hat.float() - s.v.float()).pow(2).mean(dim=(1, 2, 3))
        weight = min_snr_weight(self.diffusion.snr(s.t).float(), self.settings.min_snr, self.settings.formula)
        return (weight * per_sample).mean()
