"""Super-resolution by sampling: diffusers' DDIMScheduler with v-prediction, from the LR latent.

``lq_init=s`` (the reference's ``strength``) skips the fraction ``s`` of the schedule: with the descending
timesteps ``ts``, ``start = round(s (len(ts) - 1))``, the LR latent is noised to ``ts[start]`` and sampling
runs ``ts[start:]`` (0.1 of 50 steps starts at t = 880); ``lq_init=0`` starts from pure noise. ``spacing``
is diffusers' ``timestep_spacing``: ``leading`` (50 steps: 980, 960, ..., 0) or ``trailing`` (999, 979, ...,
19: one trailing step is a single prediction of x0 from t = 999). ``start_noise`` scales the start noise
(0: the sampler starts from the mean of its start distribution, and the SR is a function of the LR alone). ``cfg`` > 1
mixes in the prediction without LR conditioning. The model is told augmentation level 0. With
``diffusion target=residual`` the sampler works on the residual (the LR-latent start is then the noised
zero residual) and the LR latent is added back before decoding. Deterministic for the seed.
"""

from __future__ import annotations

import torch

from ditsr_plan.settings import schemas

from ..seeds import generator
from ..train.diffusion import make_scheduler


def lq_init_start(steps: int, strength: float) -> int:
    """Index of the first timestep sampled with ``lq_init=strength`` among ``steps`` descending timesteps:
    ``round(strength * (steps - 1))`` (the reference's ``get_lq_init_latents``; Python's rounding)."""
    return round(strength * (steps - 1))


@torch.no_grad()
def sample(
    model, latent, diffusion: schemas.Diffusion, lr_up: torch.Tensor, settings: schemas.Eval, placement
) -> torch.Tensor:
    """SR of LR images (N x 3 x H x W, bicubic-upsampled) with ``model``: ``settings`` are the eval block's
    (``steps``, ``lq_init``, ``cfg``, ``seed``); returns N x 3 x H x W in [-1, 1]."""
    was_training = model.training
    model.eval()
    sched = make_scheduler("ddim", diffusion, spacing=settings.spacing)
    sched.set_timesteps(settings.steps)
    device = placement.device
    cond = latent.encode(lr_up.to(device))
    base = cond if diffusion.target == "residual" else torch.zeros_like(cond)
    noise = torch.randn(cond.shape, generator=generator(settings.seed, "eval-noise")).to(device) * settings.start_noise
    timesteps = sched.timesteps
    if settings.lq_init > 0:
        timesteps = timesteps[lq_init_start(len(timesteps), settings.lq_init) :]
        x = sched.add_noise(cond - base, noise, timesteps[:1])
    else:
        x = noise * sched.init_noise_sigma
    no_aug = torch.zeros(x.shape[0], device=device)
    with placement.autocast():
        for t in timesteps:
            tt = t.expand(x.shape[0]).to(device)
            v = model(x, cond, tt, no_aug).float()
            if settings.cfg != 1:
                v_uncond = model(x, torch.zeros_like(cond), tt, no_aug).float()
                v = v_uncond + settings.cfg * (v - v_uncond)
            x = sched.step(v, t, x).prev_sample
        sr = latent.decode(x + base).float().clamp(-1, 1)
    model.train(was_training)
    return sr
