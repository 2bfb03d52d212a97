"""What every loss term is: a module with a name, what it needs, and a call that returns an
unweighted scalar. The trainer computes a term only at steps where its weight is above 0."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..errors import RunFailure


@dataclass
class StepTensors:
    """What one training step has computed, for the terms to read.

    Latents are N x C x h x w; the pixel patches are N x 3 x P x P in [-1, 1] (present only at steps
    that decode them).
    """

    t: torch.Tensor
    v: torch.Tensor
    v_hat: torch.Tensor
    x0: torch.Tensor
    x0_hat: torch.Tensor
    pred_patch: torch.Tensor | None = None
    gt_patch: torch.Tensor | None = None


class TermSetupError(RunFailure):
    """A term cannot be built (e.g. a pretrained trunk that cannot be loaded); reported before step 0."""


class LossTerm(nn.Module):
    kind: ClassVar[str]
    pixel: ClassVar[bool] = False  # computed on the decoded pixel patch

    def __init__(self, name: str, settings: dict):
        super().__init__()
        self.name = name
        self.settings = settings

    def forward(self, s: StepTensors) -> torch.Tensor:
        raise NotImplementedError
