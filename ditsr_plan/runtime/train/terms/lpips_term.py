from __future__ import annotations

import os
import warnings

import torch

from ditsr_plan.settings import schemas

from .base import LossTerm, StepTensors, TermContext, TermSetupError


def torchvision_cache() -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints")


class Lpips(LossTerm[schemas.Lpips]):
    """LPIPS (the ``lpips`` package) on the pixel patch. ``backbone=pretrained`` loads the torchvision
    trunk through torchvision's normal cache/download; ``random`` keeps a randomly initialised trunk
    (offline machines, tests). The learned linear layers ship with the package either way."""

    def __init__(self, name: str, settings: schemas.Lpips, context: TermContext):
        super().__init__(name, settings, context)
        import lpips

        random = settings.backbone == "random"
        try:
            with warnings.catch_warnings():  # lpips still uses torchvision's deprecated 'pretrained=' argument
                warnings.simplefilter("ignore", UserWarning)
                self.lpips = lpips.LPIPS(net=settings.net, pretrained=True, pnet_rand=random, verbose=False)
        except Exception as exc:
            raise TermSetupError(
                f"term '{name}': the pretrained {settings.net} trunk of LPIPS cannot be loaded ({exc}). "
                f"torchvision looks for it in {torchvision_cache()} and downloads it there when it can. "
                f"Put the weights file there, or --set {name}.backbone=random (LPIPS with a random trunk) offline."
            ) from None
        self.lpips.requires_grad_(False).eval()

    def train(self, mode: bool = True):  # the network stays in eval mode (no dropout)
        super().train(mode)
        self.lpips.eval()
        return self

    def forward(self, s: StepTensors) -> torch.Tensor:
        pred, gt = s.patches()
        return self.lpips(pred.float(), gt.float()).mean()
