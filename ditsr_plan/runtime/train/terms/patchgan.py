"""PatchGAN: the pix2pix NLayer discriminator, its own AdamW, and lazy R1 regularisation.

Generator loss: ``hinge`` = ``-mean(D(fake))``; ``nonsat`` = ``mean(softplus(-D(fake)))``.
Discriminator loss: ``hinge`` = ``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))``; ``nonsat`` =
``mean(softplus(-D(real))) + mean(softplus(D(fake)))``.
R1 on real patches every ``r1_every`` steps, ``R = mean over the batch of sum |grad_x D(x)|^2``:
- ``r1_lazy=scaled`` (lazy regularisation as StyleGAN2 and BasicSR do it): the D loss gets
  ``(r1 / 2) * R * r1_every`` -- multiplied by the interval, so the average penalty per step is the one asked for;
- ``r1_lazy=unscaled`` (the reference scripts): ``(D loss + r1 * R) / 2`` -- not multiplied by the interval,
  and halved together with the D loss. Relative to the D loss the scaled penalty is ``r1_every / 2`` times the
  unscaled one (8x at ``r1_every=16``).
With several micro-batches (``optim accum``) D sees each of them: their losses are averaged into one D step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ditsr_plan.settings import schemas

from .base import LossTerm, StepTensors, TermContext
from .health import DiscriminatorHealth


def _norm(kind: str, channels: int, affine: bool = False) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=affine)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class NLayerDiscriminator(nn.Module):
    """pix2pix's PatchGAN: 4x4 convolutions, stride 2 for ``layers`` blocks, then two stride-1 ones;
    widths ndf, 2 ndf, 4 ndf, 8 ndf (capped at 8 ndf); one logit per overlapping patch. Unlike pix2pix,
    the convolutions before an InstanceNorm have no bias (the norm removes it)."""

    def __init__(self, layers: int = 3, ndf: int = 64, norm: str = "instance", affine: bool = False):
        super().__init__()
        # a bias before a normalisation is cancelled by it (its gradient is 0 up to rounding, which
        # Adam would blow up into a random walk): convolutions have one only without normalisation
        bias = norm == "none"
        seq: list[nn.Module] = [nn.Conv2d(3, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        width = ndf
        for n in range(1, layers):
            nxt = ndf * min(2**n, 8)
            seq += [nn.Conv2d(width, nxt, 4, 2, 1, bias=bias), _norm(norm, nxt, affine), nn.LeakyReLU(0.2, True)]
            width = nxt
        nxt = ndf * min(2**layers, 8)
        seq += [nn.Conv2d(width, nxt, 4, 1, 1, bias=bias), _norm(norm, nxt, affine), nn.LeakyReLU(0.2, True)]
        seq += [nn.Conv2d(nxt, 1, 4, 1, 1)]
        self.net = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def r1_penalty(disc: nn.Module, real: torch.Tensor) -> torch.Tensor:
    """``mean over the batch of |grad_x D(x)|^2`` at real images (not yet scaled)."""
    real = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(disc(real).sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


class PatchGan(LossTerm[schemas.PatchGan]):
    """The generator's adversarial loss; after the generator's step, one step of its discriminator
    (``after_step``), whose health is watched (``flags``)."""

    def __init__(self, name: str, settings: schemas.PatchGan, context: TermContext):
        super().__init__(name, settings, context)
        self.disc = NLayerDiscriminator(settings.layers, settings.ndf, settings.norm, settings.norm_affine)
        self.optimizer = torch.optim.AdamW(
            self.disc.parameters(), lr=settings.lr, betas=settings.betas, weight_decay=settings.wd
        )
        self.health = DiscriminatorHealth(name, settings)

    def own_modules(self) -> dict[str, nn.Module]:
        return {"disc": self.disc}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"disc": self.optimizer}

    def after_step(self, patches: list, step: int, lr: float | None, reduce_grads=None) -> dict:
        return self.train_discriminator(patches, step, self.settings.lr if lr is None else lr, reduce_grads)

    def flags(self, step: int, record: dict) -> list[dict]:
        return self.health.check(step, record)

    def state(self) -> dict:
        return {"health": self.health.state()}

    def restore(self, state: dict) -> None:
        self.health.restore(state.get("health", {}))

    def forward(self, s: StepTensors) -> torch.Tensor:
        self.disc.requires_grad_(False)
        logits = self.disc(s.patches()[0].float())
        self.disc.requires_grad_(True)
        if self.settings.loss == "hinge":
            return -logits.mean()
        return F.softplus(-logits).mean()

    def _d_loss(self, real: torch.Tensor, fake: torch.Tensor, with_r1: bool):
        """D loss, R1 penalty (or None), the penalty as added to the D loss, the total to minimise, D(real), D(fake)."""
        d_real, d_fake = self.disc(real), self.disc(fake)
        if self.settings.loss == "hinge":
            loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        else:
            loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        gamma, every = self.settings.r1, self.settings.r1_every
        r1 = r1_penalty(self.disc, real) if with_r1 else None
        if self.settings.r1_lazy == "scaled":
            r1_added = None if r1 is None else (gamma / 2) * r1 * every
            total = loss if r1_added is None else loss + r1_added
        else:
            r1_added = None if r1 is None else gamma * r1
            total = 0.5 * (loss if r1_added is None else loss + r1_added)
        return loss, r1, r1_added, total, d_real, d_fake

    def train_discriminator(
        self, pairs: list[tuple[torch.Tensor, torch.Tensor]], step: int, lr: float, reduce_grads=None
    ) -> dict:
        """One D step on the detached (real, fake) patches of every micro-batch, their losses averaged; R1 on
        steps that are multiples of ``r1_every``. ``reduce_grads(disc)``, when given, runs between backward
        and the optimiser step (under DDP it averages D's gradients over the ranks). Returns the micro-batches'
        mean D loss, R1 penalty, R1 as added to the D loss, D(real) and D(fake)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with_r1 = self.settings.r1 > 0 and step % self.settings.r1_every == 0
        self.optimizer.zero_grad(set_to_none=True)
        sums = {"loss": 0.0, "r1": 0.0, "r1_weighted": 0.0, "real": 0.0, "fake": 0.0}
        for real, fake in pairs:
            loss, r1, r1_added, total, d_real, d_fake = self._d_loss(
                real.detach().float(), fake.detach().float(), with_r1
            )
            (total / len(pairs)).backward()
            sums["loss"] += float(loss.detach())
            sums["real"] += float(d_real.detach().mean())
            sums["fake"] += float(d_fake.detach().mean())
            if r1 is not None:
                sums["r1"] += float(r1.detach())
                sums["r1_weighted"] += float(r1_added.detach())
        if reduce_grads is not None:
            reduce_grads(self.disc)
        self.optimizer.step()
        stats: dict[str, float | None] = {key: value / len(pairs) for key, value in sums.items()}
        if not with_r1:
            stats["r1"] = stats["r1_weighted"] = None
        return stats
