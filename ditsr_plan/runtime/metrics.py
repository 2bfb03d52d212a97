"""Image-quality metrics for super-resolution, usable on their own on any SR/GT pair.

Images are N x 3 x H x W tensors in [-1, 1] (``from_uint8`` converts H x W x 3 uint8 arrays).

- ``psnr`` / ``ssim`` follow the SR convention (BasicSR's ``calculate_psnr`` / ``calculate_ssim``):
  values in the 0..255 range, ``crop_border`` pixels removed on every side (the scale, by convention),
  on the Y channel of ITU-R BT.601 YCbCr (``Y = 16 + (65.481 R + 128.553 G + 24.966 B)`` with RGB in
  [0, 1]) when ``y_channel`` is true, else on RGB (SSIM averaged over channels). SSIM uses an 11 x 11
  Gaussian window with sigma 1.5 over the valid region, C1 = (0.01 x 255)^2, C2 = (0.03 x 255)^2.
- ``esr`` (edge sharpness ratio) and ``fhr`` (flat hallucination ratio) measure the loss notes' two
  failure modes inside the GT's soft edge mask ``m`` (see ``terms/regions.py``):
  ``esr = sum(m |grad SR|) / sum(m |grad GT|)`` -- below 1 is blur (notes 2.2);
  ``fhr = sum((1 - m) |lap SR|) / sum((1 - m) |lap GT|)`` -- above 1 is texture invented where the GT
  is smooth (notes 2.1). Both are 1 for SR = GT. docs/metrics.md has the details.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .terms.regions import edge_mask_from_gt, luma, sobel_xy

Y_WEIGHTS = (65.481, 128.553, 24.966)
EPS = 1e-8


def from_uint8(array) -> torch.Tensor:
    """H x W x 3 uint8 -> 1 x 3 x H x W in [-1, 1]."""
    return torch.tensor(array).permute(2, 0, 1).float()[None] / 127.5 - 1


def _to_255(images: torch.Tensor, y_channel: bool, crop_border: int) -> torch.Tensor:
    """[-1, 1] -> the 0..255 range (rounded to 8-bit values, as saved images are), cropped, Y or RGB."""
    x = ((images.double().clamp(-1, 1) + 1) * 127.5).round()
    if crop_border:
        x = x[..., crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        w = torch.tensor(Y_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x / 255.0 * w).sum(dim=1, keepdim=True) + 16.0
    return x


def psnr(sr: torch.Tensor, gt: torch.Tensor, crop_border: int = 0, y_channel: bool = True) -> torch.Tensor:
    """Per-image PSNR in dB (N values)."""
    a, b = _to_255(sr, y_channel, crop_border), _to_255(gt, y_channel, crop_border)
    mse = (a - b).pow(2).flatten(1).mean(dim=1)
    return 10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))


def _gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float64, device=None) -> torch.Tensor:
    ax = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(sr: torch.Tensor, gt: torch.Tensor, crop_border: int = 0, y_channel: bool = True) -> torch.Tensor:
    """Per-image SSIM (N values), averaged over channels when on RGB."""
    a, b = _to_255(sr, y_channel, crop_border), _to_255(gt, y_channel, crop_border)
    c = a.shape[1]
    window = _gaussian_window(dtype=a.dtype, device=a.device).expand(c, 1, 11, 11)

    def filt(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, groups=c)  # valid region, like BasicSR's [5:-5, 5:-5]

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.mean(dim=(2, 3)).mean(dim=1)


def _laplacian_abs(images: torch.Tensor) -> torch.Tensor:
    import kornia

    return kornia.filters.laplacian(luma(images), kernel_size=3, normalized=False).abs()


def _gradient(images: torch.Tensor) -> torch.Tensor:
    gx, gy = sobel_xy(luma(images))
    return torch.sqrt(gx * gx + gy * gy + 1e-12)


@torch.no_grad()
def esr(sr: torch.Tensor, gt: torch.Tensor, q: float = 0.90, power: float = 0.5) -> torch.Tensor:
    """Edge sharpness ratio per image: mean |Sobel(SR)| over the GT edge mask / the same for GT."""
    m = edge_mask_from_gt(gt, q, power)
    num = (m * _gradient(sr)).flatten(1).sum(1)
    den = (m * _gradient(gt)).flatten(1).sum(1)
    return num / den.clamp_min(EPS)


@torch.no_grad()
def fhr(sr: torch.Tensor, gt: torch.Tensor, q: float = 0.90, power: float = 0.5) -> torch.Tensor:
    """Flat hallucination ratio per image: mean |Laplacian(SR)| over the GT flat mask / the same for GT."""
    flat = 1 - edge_mask_from_gt(gt, q, power)
    num = (flat * _laplacian_abs(sr)).flatten(1).sum(1)
    den = (flat * _laplacian_abs(gt)).flatten(1).sum(1)
    return num / den.clamp_min(EPS)


def all_metrics(sr: torch.Tensor, gt: torch.Tensor, scale: int, lpips_fn=None) -> list[dict[str, float | None]]:
    """Per-image dict: psnr, ssim (Y, crop_border = scale), psnr_rgb, ssim_rgb, lpips (None when no
    pretrained LPIPS is available: never a number from a random trunk), esr, fhr."""
    values = {
        "psnr": psnr(sr, gt, scale, True),
        "ssim": ssim(sr, gt, scale, True),
        "psnr_rgb": psnr(sr, gt, scale, False),
        "ssim_rgb": ssim(sr, gt, scale, False),
        "esr": esr(sr, gt),
        "fhr": fhr(sr, gt),
    }
    lp = lpips_fn(sr, gt).flatten() if lpips_fn is not None else None
    out = []
    for i in range(sr.shape[0]):
        row: dict[str, float | None] = {k: float(v[i]) for k, v in values.items()}
        row["lpips"] = float(lp[i]) if lp is not None else None
        out.append({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()})
    return out
