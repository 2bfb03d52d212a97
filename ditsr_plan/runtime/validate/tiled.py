"""Tiled sampling in latent space, for images of any size in memory set by the tile.

At every sampler step the latent is cut into overlapping tiles, the model predicts each tile's velocity,
and the predictions are blended into one velocity of the whole latent with smooth weights (MultiDiffusion,
Bar-Tal et al. 2023: the step that best agrees with every tile's is their weighted mean). The scheduler's
step then acts on the whole latent, pixel by pixel, so the start noise is drawn once for the whole latent:
each latent pixel gets the same noise whatever the tiling, and an image within one tile is sampled exactly
as without tiles.

The weight of a tile is 1 inside and a raised cosine ``(1 - cos(pi (i + 1/2) / overlap)) / 2`` over the
``overlap`` pixels along each side it shares with a neighbour (none on the image's border), so that the
blend has no step where one tile's content meets the next one's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ditsr_plan.settings.schemas import Eval


@dataclass(frozen=True)
class Tiling:
    """Tiles of a ``height`` x ``width`` latent: ``tile`` latent pixels a side (at most the latent's),
    ``overlap`` latent pixels shared by neighbours."""

    height: int
    width: int
    tile: int
    overlap: int

    def starts(self, size: int) -> list[int]:
        """The first pixel of each tile along a side of ``size`` pixels: evenly spread, the last tile ending
        at the border, neighbours sharing at least ``overlap`` pixels."""
        tile = min(self.tile, size)
        if tile >= size:
            return [0]
        stride = max(1, tile - self.overlap)
        n = math.ceil((size - tile) / stride) + 1
        return [round(i * (size - tile) / (n - 1)) for i in range(n)]

    def tiles(self) -> list[tuple[slice, slice]]:
        th, tw = min(self.tile, self.height), min(self.tile, self.width)
        return [(slice(y, y + th), slice(x, x + tw)) for y in self.starts(self.height) for x in self.starts(self.width)]

    @property
    def count(self) -> int:
        return len(self.starts(self.height)) * len(self.starts(self.width))


def _ramp(length: int, start: int, size: int, overlap: int) -> torch.Tensor:
    """A tile's weights along one side: a raised cosine over the pixels it shares with a neighbour."""
    w = torch.ones(length, dtype=torch.float64)
    n = min(overlap, length // 2)
    if n > 0:
        rise = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(n, dtype=torch.float64) + 0.5) / n)
        if start > 0:
            w[:n] = rise
        if start + length < size:
            w[-n:] = rise.flip(0)
    return w


def blend_weights(tiling: Tiling, region: tuple[slice, slice]) -> torch.Tensor:
    """The tile's blend weights (tile height x tile width, float32), > 0 everywhere."""
    ys, xs = region
    wy = _ramp(ys.stop - ys.start, ys.start, tiling.height, tiling.overlap)
    wx = _ramp(xs.stop - xs.start, xs.start, tiling.width, tiling.overlap)
    return (wy[:, None] * wx[None, :]).float()


def latent_tiling(
    height: int, width: int, settings: Eval, crop: int, factor: int, multiple: int, square: bool = False
) -> Tiling:
    """The tiling of a latent of ``height`` x ``width`` for the eval ``settings`` (tile and overlap in HR
    pixels; ``auto``: 4 x the training ``crop``, a quarter of it), in latent pixels of ``factor`` HR pixels,
    tile and overlap rounded down to a ``multiple`` (the model's patch). ``square``: for a model that takes
    square inputs only (diffusers' DiT), tiles no larger than the latent's short side, even with ``off``."""
    short = min(height, width)
    if settings.tile == "off":
        return Tiling(height, width, short if square else max(height, width), 0 if not square else short // 4)
    tile_px = 4 * crop if settings.tile == "auto" else settings.tile
    tile = max(multiple, (tile_px // factor) // multiple * multiple)
    if square:
        tile = min(tile, short)
    overlap_px = tile * factor // 4 if settings.overlap == "auto" else settings.overlap
    overlap = min((overlap_px // factor) // multiple * multiple, tile // 2)
    return Tiling(height, width, tile, overlap)


def square_only(model) -> bool:
    """Whether the generator takes square latents only: diffusers' DiT unpatchifies to a square."""
    return getattr(model, "kind", None) == "dit" or type(model).__name__ == "SRDiT"


class TiledVelocity:
    """The velocity of the whole latent, tile by tile: ``self(x, cond, t)`` runs ``predict(x_tile, cond_tile,
    t)`` on every tile and blends. ``on_tile(done, total)`` is told after each tile."""

    def __init__(self, predict, tiling: Tiling, on_tile=None):
        self.predict, self.tiling, self.on_tile = predict, tiling, on_tile
        self.regions = tiling.tiles()
        self._weights: list[torch.Tensor] | None = None

    def __call__(self, x: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if len(self.regions) == 1:  # one tile is the whole latent: exactly the untiled model
            v = self.predict(x, cond, t)
            if self.on_tile:
                self.on_tile(1, 1)
            return v
        if self._weights is None:
            self._weights = [blend_weights(self.tiling, r).to(x.device) for r in self.regions]
        total = torch.zeros_like(x, dtype=torch.float32)
        norm = torch.zeros(x.shape[-2:], dtype=torch.float32, device=x.device)
        for i, ((ys, xs), w) in enumerate(zip(self.regions, self._weights, strict=True)):
            v = self.predict(x[..., ys, xs], cond[..., ys, xs], t)
            total[..., ys, xs] += v.float() * w
            norm[ys, xs] += w
            if self.on_tile:
                self.on_tile(i + 1, len(self.regions))
        return total.div_(norm)
