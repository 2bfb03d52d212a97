"""PatchGAN: the pix2pix NLayer discriminator, its own AdamW, and lazy R1 regularisation.

Generator loss: ``hinge`` = ``-mean(D(fake))``; ``nonsat`` = ``mean(softplus(-D(fake)))``.
Discriminator loss: ``hinge`` = ``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))``; ``nonsat`` =
``mean(softplus(-D(real))) + mean(softplus(D(fake)))``.
R1 (lazy, as StyleGAN2 and BasicSR do): every ``r1_every`` steps, on real patches,
``(r1 / 2) * mean(|grad_x D(x)|^2) * r1_every`` -- multiplied by the interval so that the average
penalty per step is the one asked for (the reference scripts did not multiply).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import LossTerm, StepTensors


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class NLayerDiscriminator(nn.Module):
    """pix2pix's PatchGAN: 4x4 convolutions, stride 2 for ``layers`` blocks, then two stride-1 ones;
    widths ndf, 2 ndf, 4 ndf, 8 ndf (capped at 8 ndf); one logit per overlapping patch. Unlike pix2pix,
    the convolutions before an InstanceNorm have no bias (the norm removes it)."""

    def __init__(self, layers: int = 3, ndf: int = 64, norm: str = "instance"):
        super().__init__()
        # a bias before a normalisation is cancelled by it (its gradient is 0 up to rounding, which
        # Adam would blow up into a random walk): convolutions have one only without normalisation
        bias = norm == "none"
        seq: list[nn.Module] = [nn.Conv2d(3, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        width = ndf
        for n in range(1, layers):
            nxt = ndf * min(2**n, 8)
            seq += [nn.Conv2d(width, nxt, 4, 2, 1, bias=bias), _norm(norm, nxt), nn.LeakyReLU(0.2, True)]
            width = nxt
        nxt = ndf * min(2**layers, 8)
        seq += [nn.Conv2d(width, nxt, 4, 1, 1, bias=bias), _norm(norm, nxt), nn.LeakyReLU(0.2, True)]
        seq += [nn.Conv2d(nxt, 1, 4, 1, 1)]
        self.net = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def r1_penalty(disc: nn.Module, real: torch.Tensor) -> torch.Tensor:
    """``mean over the batch of |grad_x D(x)|^2`` at real images (not yet scaled)."""
    real = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(disc(real).sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


class PatchGan(LossTerm):
    kind = "patchgan"
    pixel = True

    def __init__(self, name: str, settings: dict):
        super().__init__(name, settings)
        self.disc = NLayerDiscriminator(settings["layers"], settings["ndf"], settings["norm"])
        self.optimizer = torch.optim.AdamW(
            self.disc.parameters(), lr=settings["lr"], betas=tuple(settings["betas"]), weight_decay=settings["wd"]
        )

    def forward(self, s: StepTensors) -> torch.Tensor:
        self.disc.requires_grad_(False)
        logits = self.disc(s.pred_patch.float())
        self.disc.requires_grad_(True)
        if self.settings["loss"] == "hinge":
            return -logits.mean()
        return F.softplus(-logits).mean()

    def train_discriminator(
        self, real: torch.Tensor, fake: torch.Tensor, step: int, lr: float, reduce_grads=None
    ) -> dict:
        """One D step on detached patches; R1 on steps that are multiples of ``r1_every``.
        ``reduce_grads(disc)``, when given, runs between backward and the optimiser step (under DDP it
        averages D's gradients over the ranks)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        real, fake = real.detach().float(), fake.detach().float()
        d_real, d_fake = self.disc(real), self.disc(fake)
        if self.settings["loss"] == "hinge":
            loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        else:
            loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        r1 = r1_weighted = None
        every, gamma = self.settings["r1_every"], self.settings["r1"]
        total = loss
        if gamma > 0 and step % every == 0:
            r1 = r1_penalty(self.disc, real)
            r1_weighted = (gamma / 2) * r1 * every
            total = total + r1_weighted
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if reduce_grads is not None:
            reduce_grads(self.disc)
        self.optimizer.step()
        return {
            "loss": float(loss.detach()),
            "r1": None if r1 is None else float(r1.detach()),
            "r1_weighted": None if r1_weighted is None else float(r1_weighted.detach()),
            "real": float(d_real.detach().mean()),
            "fake": float(d_fake.detach().mean()),
        }
