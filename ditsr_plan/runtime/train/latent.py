"""Latent spaces: exact pixel unshuffle (the CPU demo's) or a frozen diffusers AutoencoderKL.

Images are in [-1, 1], N x 3 x H x W. ``factor`` is how much smaller the latent is than the image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ditsr_plan.settings import schemas

from .loading import load_pretrained


class LatentSpace(nn.Module):
    channels: int
    factor: int

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class PixelUnshuffleLatent(LatentSpace):
    """Space-to-depth: exact and invertible, no parameters."""

    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor
        self.channels = 3 * factor * factor

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(images, self.factor)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(latents, self.factor)


class VaeLatent(LatentSpace):
    """A frozen AutoencoderKL; latents = posterior mean x scaling factor (as the reference setup)."""

    def __init__(self, path: str, subfolder: str | None = None, scaling: float | None = None):
        super().__init__()
        from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

        self.vae = load_pretrained(AutoencoderKL, path, subfolder, "latent vae path", "vae", low_cpu_mem_usage=False)
        self.vae.requires_grad_(False).eval()
        self.scaling = float(scaling if scaling is not None else self.vae.config.scaling_factor)
        self.channels = int(self.vae.config.latent_channels)
        self.factor = 2 ** (len(self.vae.config.block_out_channels) - 1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.vae.encode(images).latent_dist.mean * self.scaling

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        # gradients flow through the (frozen) decoder to the generator
        return self.vae.decode(latents / self.scaling).sample


def build_latent(settings: schemas.PixelUnshuffleLatent | schemas.VaeLatent) -> LatentSpace:
    if isinstance(settings, schemas.PixelUnshuffleLatent):
        return PixelUnshuffleLatent(settings.factor)
    return VaeLatent(settings.path, settings.subfolder, settings.scaling)
