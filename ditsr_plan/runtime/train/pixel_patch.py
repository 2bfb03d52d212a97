"""The pixel patch the pixel-space terms see: a window of the reconstructed latent decoded, its centre
kept, and the GT cut at the same place (the reference decodes a 40x40 latent window, keeps 256 px)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PixelPatch:
    """``size`` px compared, decoded with ``margin`` px around it, in a latent ``factor`` times smaller than
    the ``crop`` (both shrink to fit a small crop: the patch to the crop, the margin to what is left)."""

    size: int
    margin: int
    factor: int
    latent_size: int
    clamp: bool = False  # the decoded patch clamped to [-1, 1] (``pixel clamp=``, the reference scripts')

    @classmethod
    def fitted(cls, size: int, margin: int, crop: int, factor: int, clamp: bool = False) -> PixelPatch:
        size = min(size, crop)
        return cls(size, min(margin, (crop - size) // 2), factor, crop // factor, clamp)

    def cut(self, decode, x0_hat: torch.Tensor, hr: torch.Tensor, g: torch.Generator):
        """(prediction, GT) patches of ``size`` px: a random latent window of ``x0_hat`` decoded with
        ``decode``, its centre kept, and the matching pixels of ``hr``."""
        f = self.factor
        window = min(self.latent_size, math.ceil((self.size + 2 * self.margin) / f))
        y = int(torch.randint(0, self.latent_size - window + 1, (), generator=g))
        x = int(torch.randint(0, self.latent_size - window + 1, (), generator=g))
        decoded = decode(x0_hat[:, :, y : y + window, x : x + window])
        off = (window * f - self.size) // 2
        pred = decoded[:, :, off : off + self.size, off : off + self.size]
        if self.clamp:
            pred = pred.clamp(-1, 1)
        py, px = y * f + off, x * f + off
        return pred, hr[:, :, py : py + self.size, px : px + self.size]
