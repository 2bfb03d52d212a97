"""The reference scripts' LR adapter (``model pixart cond=adapter adapter=pyramid``): a feature pyramid of
the LR latent with one head per injected transformer block, and a style vector.

Built from the facts of the scripts (shared/reference-setup.md, "The model as the scripts built it"):

- stem: conv3x3 latent -> w, two residual blocks; three stages, each a stride-2 conv3x3 doubling the
  channels (w -> 2w -> 4w -> 8w) then two residual blocks;
- laterals: a 1x1 conv per level to w channels; top-down: each level adds the bilinearly upsampled level
  above; each of the four levels is refined by two residual blocks;
- a head per injected layer: conv3x3 w -> width (stride 2 for the finest level), SiLU, conv1x1 width ->
  width, zero-initialised (``heads="default"`` keeps PyTorch's init there: see :class:`Head`); layers 0-7
  read level 0, 8-14 level 1, 15-21 level 2, 22+ level 3, levels 2-3 resized bilinearly to level 1's size
  (the token grid for patch 2);
- a style vector: two stride-2 convs (latent -> 64 -> 128, SiLU), global average pool, MLP 128 -> width ->
  width.

A residual block is ``x + conv3x3(SiLU(GroupNorm32(conv3x3(SiLU(GroupNorm32(x))))))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FRONT_DENSE = (*range(15), 15, 17, 19, 21, 23)  # the scripts' injected blocks ("front_dense")


def injected_layers(spec: str, blocks: int) -> list[int]:
    """The block indices ``adapter_layers`` names: ``front_dense`` (those of the scripts' list that exist),
    ``all``, or ``I,J,...`` (each below ``blocks``; a ValueError otherwise)."""
    if spec == "front_dense":
        return [i for i in FRONT_DENSE if i < blocks]
    if spec == "all":
        return list(range(blocks))
    layers = sorted({int(part) for part in spec.split(",")})
    wrong = [i for i in layers if i >= blocks]
    if wrong:
        raise ValueError(f"adapter_layers names block {wrong[0]}, but the model has {blocks} (0-{blocks - 1})")
    return layers


def level_of(layer: int) -> int:
    """The pyramid level a block's head reads: blocks 0-7 level 0 (finest), 8-14 level 1, 15-21 level 2,
    22 and above level 3."""
    return 0 if layer < 8 else 1 if layer < 15 else 2 if layer < 22 else 3


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(32, channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(32, channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _two(channels: int) -> nn.Sequential:
    return nn.Sequential(ResBlock(channels), ResBlock(channels))


class Head(nn.Module):
    """conv3x3 (stride 2 for the finest level), SiLU, conv1x1; ``zero``: the last conv's weight and bias start
    at 0 (the scripts'). With the injection's zero-initialised projections after it, that makes the head's
    output and every gradient reaching it 0 at every step: ``default`` keeps PyTorch's init there instead."""

    def __init__(self, channels: int, width: int, stride: int, init: str):
        super().__init__()
        self.conv = nn.Conv2d(channels, width, 3, stride=stride, padding=1)
        self.act = nn.SiLU()
        self.out = nn.Conv2d(width, width, 1)
        if init == "zero":
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)  # type: ignore[arg-type]  # a conv made with bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.conv(x)))


class FeaturePyramid(nn.Module):
    """LR latent (N x C x H x W) -> one feature map per injected layer (N x tokens x ``width``, tokens =
    H/2 x W/2) and the style vector (N x ``width``)."""

    def __init__(self, channels: int, width: int, layers: list[int], base: int = 128, heads: str = "zero"):
        super().__init__()
        widths = [base, 2 * base, 4 * base, 8 * base]
        self.stem = nn.Sequential(nn.Conv2d(channels, base, 3, padding=1), _two(base))
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), _two(2 * c)) for c in widths[:3]
        )
        self.laterals = nn.ModuleList(nn.Conv2d(c, base, 1) for c in widths)
        self.refine = nn.ModuleList(_two(base) for _ in widths)
        self.layers = list(layers)
        self.heads = nn.ModuleList(Head(base, width, 2 if level_of(i) == 0 else 1, heads) for i in self.layers)
        self.style_encoder = nn.Sequential(
            nn.Conv2d(channels, 64, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(64, 128, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(128, width),
            nn.SiLU(),
            nn.Linear(width, width),
        )

    def levels(self, lr_latent: torch.Tensor) -> list[torch.Tensor]:
        """The four refined levels, finest first; levels 2-3 resized to level 1's size."""
        x = self.stem(lr_latent)
        bottom_up = [x]
        for stage in self.stages:
            x = stage(x)
            bottom_up.append(x)
        merged = [lateral(f) for lateral, f in zip(self.laterals, bottom_up, strict=True)]
        for i in (2, 1, 0):  # top-down: add the upsampled level above
            above = F.interpolate(merged[i + 1], size=merged[i].shape[-2:], mode="bilinear", align_corners=False)
            merged[i] = merged[i] + above
        out = [refine(f) for refine, f in zip(self.refine, merged, strict=True)]
        size = out[1].shape[-2:]
        return out[:2] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in out[2:]]

    def forward(self, lr_latent: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        levels = self.levels(lr_latent)
        heads = zip(self.layers, self.heads, strict=True)
        features = [head(levels[level_of(i)]).flatten(2).transpose(1, 2) for i, head in heads]
        return features, self.style_encoder(lr_latent)
