"""Image-quality metrics for super-resolution, usable on their own on any SR/GT pair.

Images are N x 3 x H x W tensors in [-1, 1] (``from_uint8`` converts H x W x 3 uint8 arrays).

- ``psnr`` / ``ssim`` follow the SR convention (BasicSR's ``calculate_psnr`` / ``calculate_ssim``):
  values in the 0..255 range, ``crop_border`` pixels removed on every side (the scale, by convention),
  on the Y channel of ITU-R BT.601 YCbCr (``Y = 16 + (65.481 R + 128.553 G + 24.966 B)`` with RGB in
  [0, 1]) when ``y_channel`` is true, else on RGB (SSIM averaged over channels). SSIM uses an 11 x 11
  Gaussian window with sigma 1.5 over the valid region, C1 = (0.01 x 255)^2, C2 = (0.03 x 255)^2, applied
  as two separable 1-D passes. Identical images have PSNR ``inf`` (as BasicSR).
- ``esr`` (edge sharpness ratio) and ``fhr`` (flat hallucination ratio) measure the loss notes' two
  failure modes inside the GT's soft edge mask ``m`` (see ``train/terms/regions.py``), with a floor of
  ``FLOOR_GREY`` grey levels on both means so that a region with no structure at all gives a finite ratio:
  ``esr = (mean_m |grad SR| + f) / (mean_m |grad GT| + f)`` -- below 1 is blur (notes 2.2);
  ``fhr = (mean_(1-m) |lap SR| + f) / (mean_(1-m) |lap GT| + f)`` -- above 1 is texture invented where the
  GT is smooth (notes 2.1). Both are exactly 1 for SR = GT. docs/metrics.md has the details.
- ``mean_metrics`` aggregates per-image rows: ratios (ESR, FHR) by their geometric mean, the others by
  the arithmetic mean of their finite values (a perfect image's ``inf`` PSNR is counted in ``perfect``).
"""

from __future__ import annotations

import math

import torch

from ..train.terms.regions import edge_mask_from_gt, laplacian, luma, sobel_xy

Y_WEIGHTS = (65.481, 128.553, 24.966)
FLOOR_GREY = 1.0  # grey levels (of 255) added to both means of ESR and FHR
RATIO_METRICS = ("esr", "fhr")  # aggregated by the geometric mean


def from_uint8(array) -> torch.Tensor:
    """H x W x 3 uint8 -> 1 x 3 x H x W in [-1, 1]."""
    return torch.tensor(array).permute(2, 0, 1).float()[None] / 127.5 - 1


def _quantised(images: torch.Tensor, crop_border: int) -> torch.Tensor:
    """[-1, 1] -> the 0..255 range rounded to 8-bit values (as saved images are), float64, cropped."""
    x = ((images.double().clamp(-1, 1) + 1) * 127.5).round()
    if crop_border:
        x = x[..., crop_border:-crop_border, crop_border:-crop_border]
    return x


def _y_of(rgb_255: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(Y_WEIGHTS, dtype=rgb_255.dtype, device=rgb_255.device).view(1, 3, 1, 1)
    return (rgb_255 / 255.0 * w).sum(dim=1, keepdim=True) + 16.0


def _to_255(images: torch.Tensor, y_channel: bool, crop_border: int) -> torch.Tensor:
    """[-1, 1] -> 8-bit values in the 0..255 range, cropped, Y (BT.601) or RGB."""
    x = _quantised(images, crop_border)
    return _y_of(x) if y_channel else x


def _gaussian_1d(size: int = 11, sigma: float = 1.5, dtype=torch.float64, device=None) -> torch.Tensor:
    ax = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_last(x: torch.Tensor, taps: torch.Tensor, block: int = 64) -> torch.Tensor:
    """Correlate the last dimension with ``taps`` over the valid region, as matrix products with a banded
    (block + taps - 1) x block matrix: float64 BLAS is many times faster than a float64 convolution."""
    n, width = len(taps), x.shape[-1] - len(taps) + 1
    band = torch.zeros(block + n - 1, block, dtype=x.dtype, device=x.device)
    cols = torch.arange(block, device=x.device)
    for i in range(n):
        band[cols + i, cols] = taps[i]
    parts = []
    for start in range(0, width, block):
        w = min(block, width - start)
        parts.append(x[..., start : start + w + n - 1] @ band[: w + n - 1, :w])
    return torch.cat(parts, dim=-1)


def _gaussian_valid(x: torch.Tensor) -> torch.Tensor:
    """The 11 x 11 Gaussian window (sigma 1.5) over the valid region, as two separable 1-D passes."""
    g = _gaussian_1d(dtype=x.dtype, device=x.device)
    rows = _filter_last(x, g)
    return _filter_last(rows.transpose(-1, -2), g).transpose(-1, -2)


def _ssim_255(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM of images already in the 0..255 range (N x C x H x W, float64), averaged over channels."""
    filtered = _gaussian_valid(torch.stack([a, b, a * a, b * b, a * b], dim=2))
    mu_a, mu_b, aa, bb, ab = filtered.unbind(dim=2)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    var_a, var_b, cov = aa - mu_a**2, bb - mu_b**2, ab - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.mean(dim=(2, 3)).mean(dim=1)


def _psnr_255(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mse = (a - b).pow(2).flatten(1).mean(dim=1)
    return 10 * torch.log10(255.0**2 / mse)


def psnr(sr: torch.Tensor, gt: torch.Tensor, crop_border: int = 0, y_channel: bool = True) -> torch.Tensor:
    """Per-image PSNR in dB (N values); ``inf`` where the images are identical."""
    return _psnr_255(_to_255(sr, y_channel, crop_border), _to_255(gt, y_channel, crop_border))


def ssim(sr: torch.Tensor, gt: torch.Tensor, crop_border: int = 0, y_channel: bool = True) -> torch.Tensor:
    """Per-image SSIM (N values), averaged over channels when on RGB."""
    return _ssim_255(_to_255(sr, y_channel, crop_border), _to_255(gt, y_channel, crop_border))


def _laplacian_abs(images: torch.Tensor) -> torch.Tensor:
    """|4-neighbour Laplacian| of the luma in [0, 1] (the flat term's default kernel)."""
    return laplacian(luma(images), 4).abs()


def _gradient(images: torch.Tensor) -> torch.Tensor:
    gx, gy = sobel_xy(luma(images))
    return torch.sqrt(gx * gx + gy * gy + 1e-12)


def _floored_ratio(weights: torch.Tensor, sr_map: torch.Tensor, gt_map: torch.Tensor) -> torch.Tensor:
    area = weights.flatten(1).sum(1).clamp_min(1e-12)
    floor = FLOOR_GREY / 255.0
    num = (weights * sr_map).flatten(1).sum(1) / area + floor
    den = (weights * gt_map).flatten(1).sum(1) / area + floor
    return num / den


@torch.no_grad()
def esr(sr: torch.Tensor, gt: torch.Tensor, q: float = 0.90, power: float = 0.5, mask=None) -> torch.Tensor:
    """Edge sharpness ratio per image: (mean |Sobel(SR)| over the GT edge mask + floor) / (the same for GT)."""
    mask = edge_mask_from_gt(gt, q, power) if mask is None else mask
    return _floored_ratio(mask, _gradient(sr), _gradient(gt))


@torch.no_grad()
def fhr(sr: torch.Tensor, gt: torch.Tensor, q: float = 0.90, power: float = 0.5, mask=None) -> torch.Tensor:
    """Flat hallucination ratio per image: (mean |Laplacian(SR)| over the GT flat mask + floor) / (the same for GT)."""
    mask = edge_mask_from_gt(gt, q, power) if mask is None else mask
    return _floored_ratio(1 - mask, _laplacian_abs(sr), _laplacian_abs(gt))


@torch.no_grad()
def all_metrics(sr: torch.Tensor, gt: torch.Tensor, scale: int, lpips_fn=None) -> list[dict[str, float | None]]:
    """Per-image dict: psnr, ssim (Y, crop_border = scale), psnr_rgb, ssim_rgb, lpips (None when no
    pretrained LPIPS is available: never a number from a random trunk), esr, fhr. PSNR is ``inf`` for a
    perfect image; a NaN (it cannot happen for valid images) would be None. The images are quantised and
    the GT's edge mask computed once for all of them."""
    rgb_sr, rgb_gt = _quantised(sr, scale), _quantised(gt, scale)
    y_sr, y_gt = _y_of(rgb_sr), _y_of(rgb_gt)
    mask = edge_mask_from_gt(gt)
    values = {
        "psnr": _psnr_255(y_sr, y_gt),
        "ssim": _ssim_255(y_sr, y_gt),
        "psnr_rgb": _psnr_255(rgb_sr, rgb_gt),
        "ssim_rgb": _ssim_255(rgb_sr, rgb_gt),
        "esr": esr(sr, gt, mask=mask),
        "fhr": fhr(sr, gt, mask=mask),
    }
    lp = lpips_fn(sr, gt).flatten() if lpips_fn is not None else None
    out = []
    for i in range(sr.shape[0]):
        row: dict[str, float | None] = {k: float(v[i]) for k, v in values.items()}
        row["lpips"] = float(lp[i]) if lp is not None else None
        out.append({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    return out


def mean_metrics(rows: list[dict[str, float | None]]) -> dict[str, float | int | None]:
    """The mean of per-image metric rows: ESR and FHR by the geometric mean (a ratio's typical value; the
    arithmetic mean would let the least textured image decide), the others by the arithmetic mean of their
    finite values. ``perfect`` counts the images with an infinite PSNR (identical to the GT), which the
    mean PSNR leaves out (it is ``inf`` only when every image is perfect)."""
    keys = list(rows[0]) if rows else []
    mean: dict[str, float | int | None] = {}
    for key in keys:
        values = [v for r in rows if (v := r.get(key)) is not None]
        finite = [v for v in values if math.isfinite(v)]
        if not values:
            mean[key] = None
        elif key in RATIO_METRICS:
            mean[key] = math.exp(sum(math.log(v) for v in finite) / len(finite)) if finite else None
        elif finite:
            mean[key] = sum(finite) / len(finite)
        else:
            mean[key] = values[0]  # every value infinite: a perfect PSNR everywhere
    perfect = sum(1 for r in rows if r.get("psnr") == math.inf)
    if perfect:
        mean["perfect"] = perfect
    return mean
