from __future__ import annotations

import torch

from ditsr_plan.settings import schemas

from .base import LossTerm, StepTensors, TermContext
from .regions import edge_mask_from_gt


class Ffl(LossTerm[schemas.Ffl]):
    """The Focal Frequency Loss (the ``focal-frequency-loss`` package) on the pixel patch in [0, 1];
    ``mask=edge`` multiplies both images by the GT edge mask first."""

    def __init__(self, name: str, settings: schemas.Ffl, context: TermContext):
        super().__init__(name, settings, context)
        from focal_frequency_loss import FocalFrequencyLoss

        self.ffl = FocalFrequencyLoss(loss_weight=1.0, alpha=settings.alpha)

    def forward(self, s: StepTensors) -> torch.Tensor:
        pred_patch, gt_patch = s.patches()
        pred, gt = (pred_patch.float() + 1) / 2, (gt_patch.float() + 1) / 2
        if self.settings.mask == "edge":
            mask = edge_mask_from_gt(gt_patch, self.settings.q, self.settings.pow)
            pred, gt = pred * mask, gt * mask
        return self.ffl(pred, gt)
