"""Colour fix: the SR's low frequencies replaced by the LR's (diffusion SR drifts in colour).

``wavelet`` (as StableSR and SUPIR do): both images are split by an a-trous wavelet decomposition -- five
levels of a 3 x 3 binomial blur (weights 1/4 centre, 1/8 sides, 1/16 corners) dilated 1, 2, 4, 8, 16
pixels, edges replicated -- into high-frequency bands and a residual low-pass; the result is the SR's bands
on the LR's low-pass. ``adain``: each channel of the SR shifted and scaled to the LR's mean and standard
deviation. Both take images in [-1, 1], N x C x H x W, the LR upsampled to the SR's size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LEVELS = 5
_KERNEL = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16.0


def _blur(image: torch.Tensor, dilation: int) -> torch.Tensor:
    channels = image.shape[1]
    kernel = _KERNEL.to(image)[None, None].expand(channels, 1, 3, 3)
    padded = F.pad(image, (dilation,) * 4, mode="replicate")
    return F.conv2d(padded, kernel, groups=channels, dilation=dilation)


def low_pass(image: torch.Tensor, levels: int = LEVELS) -> torch.Tensor:
    """The residual low-pass of the a-trous decomposition (what is left after ``levels`` bands)."""
    for i in range(levels):
        image = _blur(image, 2**i)
    return image


HALO = sum(2**i for i in range(LEVELS))  # rows a pixel of the low-pass depends on, above and below: 31


def wavelet_fix(sr: torch.Tensor, lr_up: torch.Tensor, band: int = 256) -> torch.Tensor:
    """The SR's high-frequency bands on the LR's low-pass: ``sr - low(sr) + low(lr_up)``, computed in bands
    of ``band`` rows with a halo of :data:`HALO` rows (the low-pass reaches no further), so that its
    temporaries are a band's, not the image's."""
    out = torch.empty_like(sr)
    height = sr.shape[-2]
    for top in range(0, height, band):
        lo, hi = max(0, top - HALO), min(height, top + band + HALO)
        sr32, lr32 = sr[..., lo:hi, :].float(), lr_up[..., lo:hi, :].float()
        fixed = sr32 - low_pass(sr32) + low_pass(lr32)
        out[..., top : top + band, :] = fixed[..., top - lo : top - lo + band, :].to(sr.dtype)
    return out


def adain_fix(sr: torch.Tensor, lr_up: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Each channel of the SR with the LR's mean and standard deviation."""
    sr32, lr32 = sr.float(), lr_up.float()
    mean_s, std_s = sr32.mean((-2, -1), keepdim=True), sr32.std((-2, -1), keepdim=True)
    mean_l, std_l = lr32.mean((-2, -1), keepdim=True), lr32.std((-2, -1), keepdim=True)
    return ((sr32 - mean_s) / (std_s + eps) * std_l + mean_l).to(sr.dtype)


def color_fix(sr: torch.Tensor, lr_up: torch.Tensor, how: str) -> torch.Tensor:
    """``how``: wavelet, adain or none; the result clamped to [-1, 1]."""
    if how == "none":
        return sr
    fixed = wavelet_fix(sr, lr_up) if how == "wavelet" else adain_fix(sr, lr_up)
    return fixed.clamp_(-1, 1)
