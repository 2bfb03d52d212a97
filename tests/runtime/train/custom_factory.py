"""A generator of one's own, for ``model custom factory=tests.runtime.train.custom_factory:small_net``."""

from __future__ import annotations

import torch
from torch import nn


class SmallNet(nn.Module):
    """Two convolutions over [noisy, LR latent], the timestep and augmentation level as extra planes."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(2 * channels + 2, width, 3, padding=1), nn.SiLU(), nn.Conv2d(width, channels, 3, padding=1)
        )

    def forward(self, noisy, lr_latent, timesteps, aug_level):
        n, _, h, w = noisy.shape
        planes = torch.stack([timesteps.float() / 1000, aug_level.float()], dim=1).view(n, 2, 1, 1).expand(n, 2, h, w)
        return self.net(torch.cat([noisy, lr_latent, planes], dim=1))


def small_net(latent_channels: int, latent_size: int, width: int = 16) -> nn.Module:
    return SmallNet(latent_channels, width)


def raising(latent_channels: int, latent_size: int) -> nn.Module:
    raise RuntimeError("the factory's own mistake")


def not_a_module(latent_channels: int, latent_size: int):
    return "a string"


class FirstChannel(nn.Module):
    def forward(self, noisy, lr_latent, timesteps, aug_level):
        return noisy[:, :1]


def wrong_shape(latent_channels: int, latent_size: int) -> nn.Module:
    return FirstChannel()
