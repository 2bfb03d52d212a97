"""What every loss term is: a module with a name, its settings, and a call that returns an unweighted
scalar; the trainer computes a term only at steps where its weight is above 0.

Hooks, for terms that do more than compute a loss (the PatchGAN trains its discriminator):

- ``own_modules()``: the term's trained modules (checkpointed with it, all-reduced under DDP, counted in
  the header), e.g. ``{"disc": the discriminator}``;
- ``optimizers()``: their optimisers (checkpointed);
- ``after_step(patches, step, lr, reduce_grads)`` (``lr``: its learning-rate knob's value, None without
  one): runs after the generator's optimiser step at the steps
  the graph says (``needs.discriminator``: while the term is live, and its warm-up before), on the (GT,
  prediction) pixel patches of every micro-batch; returns its record for ``metrics.jsonl``;
- ``flags(step, record)``: warnings about that record (a diverging discriminator), each once per episode;
- ``state()`` / ``restore(state)``: JSON state of the term's own (the flags' streaks), for checkpoints.

What a term needs (the pixel patch; an after-step) is declared with its settings schema in
``settings/schemas.py`` and reaches the runtime through the compiled graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

import torch
from torch import nn

from ditsr_plan.settings.schemas import TermKind

from ...errors import RunFailure
from ..diffusion import Diffusion

K = TypeVar("K", bound=TermKind)


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

    def patches(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction, GT) pixel patches, for a pixel term (computed only at steps that decode them)."""
        assert self.pred_patch is not None and self.gt_patch is not None, "a pixel term at a step without patches"
        return self.pred_patch, self.gt_patch


@dataclass(frozen=True)
class TermContext:
    """What a term may need from the run when it is built (the diffusion, for Min-SNR weights)."""

    diffusion: Diffusion


class TermSetupError(RunFailure):
    """A term cannot be built (e.g. a pretrained trunk that cannot be loaded); reported before step 0."""


class LossTerm(nn.Module, Generic[K]):
    """A loss term of the kind whose settings schema is ``K`` (``Flat(LossTerm[schemas.Flat])``)."""

    settings: K

    def __init__(self, name: str, settings: K, context: TermContext):
        super().__init__()
        self.name = name
        self.settings = settings

    def forward(self, s: StepTensors) -> torch.Tensor:
        raise NotImplementedError

    def own_modules(self) -> dict[str, nn.Module]:
        return {}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {}

    def after_step(self, patches: list, step: int, lr: float | None, reduce_grads=None) -> dict | None:
        return None

    def flags(self, step: int, record: dict) -> list[dict]:
        return []

    def state(self) -> dict:
        return {}

    def restore(self, state: dict) -> None:
        pass
