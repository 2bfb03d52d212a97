"""Super-resolution by sampling: diffusers' DDIMScheduler with v-prediction, from the LR latent.

``lq_init=s`` (the reference's ``strength``) skips the fraction ``s`` of the schedule: with the descending
timesteps ``ts``, ``start = round(s (len(ts) - 1))``, the LR latent is noised to ``ts[start]`` and sampling
runs ``ts[start:]`` (0.1 of 50 steps starts at t = 880); ``lq_init=0`` starts from pure noise. ``spacing``
is diffusers' ``timestep_spacing``: ``leading`` (50 steps: 980, 960, ..., 0) or ``trailing`` (999, 979, ...,
19: one trailing step is a single prediction of x0 from t = 999). ``start_noise`` scales the start noise
(0: the sampler starts from the mean of its start distribution, and the SR is a function of the LR alone).
``cfg`` > 1 mixes in the prediction without LR conditioning (``guidance_drops``: without the LR latent, or
without the adapter only). The model is told augmentation level 0. With
``diffusion target=residual`` the sampler works on the residual (the LR-latent start is then the noised
zero residual) and the LR latent is added back before decoding. Deterministic for the seed.

Images larger than the eval block's ``tile`` are sampled tile by tile (``tiled.py``) with the VAE's encode
and decode tiled too (diffusers' own); ``color_fix`` then corrects the SR's colours to the LR's
(``colorfix.py``). Validation, ``evaluate`` and ``upscale`` all sample here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from ditsr_plan.settings import schemas

from ..seeds import generator
from ..train.diffusion import make_scheduler
from ..train.generators import patch_size
from .colorfix import color_fix
from .tiled import TiledVelocity, latent_tiling, square_only


def lq_init_start(steps: int, strength: float) -> int:
    """Index of the first timestep sampled with ``lq_init=strength`` among ``steps`` descending timesteps:
    ``round(strength * (steps - 1))`` (the reference's ``get_lq_init_latents``; Python's rounding)."""
    return round(strength * (steps - 1))


def unconditional(model, x, cond, t, aug_level, drops: str) -> torch.Tensor:
    """The unconditional branch of guidance: ``lr`` zeroes the LR latent; ``adapter`` drops the adapter's
    features and style and keeps the LR latent (the concatenated one), as the reference scripts did."""
    if drops == "adapter":
        return model(x, cond, t, aug_level, use_adapter=False)
    return model(x, torch.zeros_like(cond), t, aug_level)


@contextlib.contextmanager
def tiled_vae(latent, tile_px: int, overlap_px: int):
    """diffusers' tiled encode and decode for a VAE latent (tiles of ``tile_px`` HR pixels overlapping by
    ``overlap_px``), while the context lasts; a pixel-unshuffle latent is local already."""
    vae = getattr(latent, "vae", None)
    if vae is None:
        yield
        return
    saved = (vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size, vae.tile_overlap_factor)
    vae.use_tiling = True
    vae.tile_sample_min_size = tile_px
    vae.tile_latent_min_size = tile_px // latent.factor
    vae.tile_overlap_factor = min(0.5, max(overlap_px / tile_px, 1 / 8))
    try:
        yield
    finally:
        vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size, vae.tile_overlap_factor = saved


def ddim_step_in_place(sched, v: torch.Tensor, t, x: torch.Tensor, rows: int = 32) -> None:
    """``x`` <- the DDIM step from ``x`` with velocity ``v``, a band of ``rows`` latent rows at a time: the
    step is elementwise (eta 0, no clipping), so the result is the whole step's, bit for bit, while its
    temporaries are a band's, not the image's."""
    for r in range(0, x.shape[-2], rows):
        band = slice(r, r + rows)
        x[..., band, :] = sched.step(v[..., band, :], t, x[..., band, :]).prev_sample


def _predictor(model, settings: schemas.Eval, device):
    """The velocity of (a tile of) the latent, classifier-free guided when ``cfg`` > 1, at augmentation 0."""

    def predict(x: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = t.expand(x.shape[0]).to(device)
        no_aug = torch.zeros(x.shape[0], device=device)
        v = model(x, cond, tt, no_aug).float()
        if settings.cfg != 1:
            v_uncond = unconditional(model, x, cond, tt, no_aug, settings.guidance_drops).float()
            v = v_uncond + settings.cfg * (v - v_uncond)
        return v

    return predict


@torch.no_grad()
def sample(
    model,
    latent,
    diffusion: schemas.Diffusion,
    lr_up: torch.Tensor | Callable[[], torch.Tensor],
    settings: schemas.Eval,
    placement,
    crop: int,
    on_tile=None,
) -> torch.Tensor:
    """SR of LR images (N x 3 x H x W, bicubic-upsampled) with ``model``: ``settings`` are the eval block's
    (``steps``, ``lq_init``, ``cfg``, ``seed``, ``tile``, ``overlap``, ``color_fix``; ``crop``, the training
    crop, sets the automatic tile); returns N x 3 x H x W in [-1, 1]. ``on_tile(step, steps, tile, tiles)``
    is told after each tile of each step. ``lr_up`` may be a function that makes it: it is then made when
    needed (encoding, the colour fix) and not kept while sampling -- an image-sized buffer less."""
    was_training = model.training
    model.eval()
    sched = make_scheduler("ddim", diffusion, spacing=settings.spacing)
    sched.set_timesteps(settings.steps)
    device = placement.device
    upsampled = lr_up if callable(lr_up) else (lambda: lr_up)
    first = upsampled().to(device)
    h, w = first.shape[-2] // latent.factor, first.shape[-1] // latent.factor
    tiling = latent_tiling(h, w, settings, crop, latent.factor, patch_size(model), square_only(model))
    tile_px, overlap_px = tiling.tile * latent.factor, tiling.overlap * latent.factor
    vae_tiles = tiled_vae(latent, tile_px, overlap_px) if tiling.count > 1 else contextlib.nullcontext()
    with vae_tiles:
        cond = latent.encode(first)
    del first
    residual = diffusion.target == "residual"
    noise = torch.randn(cond.shape, generator=generator(settings.seed, "eval-noise")).to(device)
    noise *= settings.start_noise
    timesteps = sched.timesteps
    if settings.lq_init > 0:
        timesteps = timesteps[lq_init_start(len(timesteps), settings.lq_init) :]
        x = sched.add_noise(cond - cond if residual else cond, noise, timesteps[:1])
    else:
        x = noise * sched.init_noise_sigma
    del noise  # whole-image buffers are what grows with the image: none is kept longer than needed
    step = [0]
    told = (lambda i, n: on_tile(step[0] + 1, len(timesteps), i, n)) if on_tile else None
    velocity = TiledVelocity(_predictor(model, settings, device), tiling, told)
    with placement.autocast():
        for t in timesteps:
            ddim_step_in_place(sched, velocity(x, cond, t), t, x)
            step[0] += 1
        if residual:
            x.add_(cond)
        del cond
        with tiled_vae(latent, tile_px, overlap_px) if tiling.count > 1 else contextlib.nullcontext():
            sr = latent.decode(x).float().clamp_(-1, 1)
    model.train(was_training)
    if settings.color_fix == "none":
        return sr
    return color_fix(sr, upsampled().to(sr.device).float(), settings.color_fix)
