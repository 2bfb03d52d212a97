"""GT-guided region losses (the reference setup's edge_gtmask formulas), on kornia's filters.

- luma in [0, 1]: ``0.2989 R + 0.5870 G + 0.1140 B`` of the image mapped from [-1, 1];
- soft edge mask ``m`` from the GT: Sobel gradient magnitude divided by its per-image ``q`` quantile,
  clamped to [0, 1], raised to ``pow``; ``1 - m`` is the flat (defocus) mask;
- edge loss: ``m * (|gx(pred) - gx(gt)| + |gy(pred) - gy(gt)|)`` with Sobel gx, gy;
- flat loss: ``(1 - m) * |laplacian(pred)|`` with the 3x3 Laplacian of ``laplacian=4`` (default, the
  reference scripts'), the 4-neighbour kernel ``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]``, or ``laplacian=8``,
  kornia's default ``[[1, 1, 1], [1, -8, 1], [1, 1, 1]]`` (about 1.8x larger raw values on the same patch);
  border handling as kornia's: Sobel replicates the border, the Laplacian reflects it;
- ``reduce=mask`` averages each image over its mask's own area (sum / sum of the mask), then over the
  batch (so a batch split across DDP ranks gives the same mean); ``reduce=all`` over all pixels (the
  scripts' way).
"""

from __future__ import annotations

import torch

from ditsr_plan.settings import schemas

from .base import LossTerm, StepTensors

LUMA = (0.2989, 0.5870, 0.1140)
EPS = 1e-6


def _fp32(x: torch.Tensor):
    """Filters, masks and quantiles in fp32 even inside bf16 autocast (torch.quantile takes no bf16)."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def luma(images: torch.Tensor) -> torch.Tensor:
    """N x 3 x H x W in [-1, 1] -> N x 1 x H x W luma in [0, 1]."""
    rgb = (images.float() + 1) / 2
    w = torch.tensor(LUMA, device=images.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    return (rgb * w).sum(dim=1, keepdim=True)


def sobel_xy(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    import kornia

    with _fp32(y):
        grad = kornia.filters.spatial_gradient(y.float(), mode="sobel", order=1, normalized=False)  # N x 1 x 2 x H x W
    return grad[:, :, 0], grad[:, :, 1]


def edge_mask_from_gt(gt: torch.Tensor, q: float = 0.90, power: float = 0.5) -> torch.Tensor:
    """The soft edge mask of a GT batch, N x 1 x H x W in [0, 1] (no gradient)."""
    with torch.no_grad():
        gx, gy = sobel_xy(luma(gt))
        magnitude = torch.sqrt(gx * gx + gy * gy + EPS)
        level = torch.quantile(magnitude.flatten(1), q, dim=1).view(-1, 1, 1, 1)
        return torch.clamp(magnitude / (level + EPS), 0, 1).pow(power)


def _reduce(values: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    if how == "all":
        return values.mean()
    per_image = values.flatten(1).sum(1) / (mask.expand_as(values).flatten(1).sum(1) + EPS)
    return per_image.mean()


def edge_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, reduce: str = "mask") -> torch.Tensor:
    pgx, pgy = sobel_xy(luma(pred))
    ggx, ggy = sobel_xy(luma(gt))
    return _reduce(mask * ((pgx - ggx).abs() + (pgy - ggy).abs()), mask, reduce)


LAPLACIANS = {
    4: ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0)),
    8: ((1.0, 1.0, 1.0), (1.0, -8.0, 1.0), (1.0, 1.0, 1.0)),
}


def laplacian(y: torch.Tensor, neighbours: int = 4) -> torch.Tensor:
    """The 3x3 Laplacian (4- or 8-neighbour kernel) of N x 1 x H x W luma, in fp32, borders reflected."""
    import kornia

    kernel = torch.tensor(LAPLACIANS[neighbours], dtype=torch.float32, device=y.device)[None]
    with _fp32(y):
        return kornia.filters.filter2d(y.float(), kernel, border_type="reflect")


def flat_loss(pred: torch.Tensor, mask: torch.Tensor, reduce: str = "mask", neighbours: int = 4) -> torch.Tensor:
    lap = laplacian(luma(pred), neighbours)
    flat = 1 - mask
    return _reduce(flat * lap.abs(), flat, reduce)


class Edge(LossTerm[schemas.Edge]):
    """Sobel-gradient L1 inside the soft GT edge mask."""

    def forward(self, s: StepTensors) -> torch.Tensor:
        pred, gt = s.patches()
        mask = edge_mask_from_gt(gt, self.settings.q, self.settings.pow)
        return edge_loss(pred, gt, mask, self.settings.reduce)


class Flat(LossTerm[schemas.Flat]):
    """|Laplacian(pred)| inside the GT flat mask (1 - edge mask)."""

    def forward(self, s: StepTensors) -> torch.Tensor:
        pred, gt = s.patches()
        mask = edge_mask_from_gt(gt, self.settings.q, self.settings.pow)
        return flat_loss(pred, mask, self.settings.reduce, self.settings.laplacian)
