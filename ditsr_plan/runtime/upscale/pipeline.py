"""``DiTSRPipeline``: a trained SR model used the way diffusers' pipelines are.

    pipe = DiTSRPipeline.from_pretrained("exported/")   # what 'ditsr-plan export RUN --merge OUT' writes
    pipe.to("cuda")
    [sr] = pipe(Image.open("photo.png"), num_inference_steps=2, generator=torch.Generator().manual_seed(0))

``from_run(RUN_OR_CHECKPOINT)`` builds one from a run folder (its newest complete checkpoint, EMA by
default) or a checkpoint folder; ``save_pretrained(OUT)`` writes the self-describing folder:
``transformer/`` (a diffusers transformer; from_pretrained of its class loads it), ``vae/`` for a VAE
latent, ``scheduler/`` (the DDIM sampler's config), ``sr_conditioning.safetensors`` (PixArt's caption, the
LR adapter) and ``sr_pipeline.json`` (how the transformer is called, the latent, the noise schedule, the
sampling settings -- the run's eval block -- the scale and the training crop). ``ditsr-plan upscale``
runs this class. Sampling is the validation's (``runtime/validate/sampler.py``): tiled, colour-fixed, and
deterministic for the seed (a ``torch.Generator`` passes its seed).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ditsr_plan.settings.schemas import Diffusion, Eval
from ditsr_plan.settings.timesteps import below_t_min

from ..train.device import place
from ..train.generators import patch_size
from ..validate.sampler import sample
from .denoiser import ExportedDenoiser, describe
from .folder import SAMPLING_KEYS, load_folder, load_run, save_folder
from .images import model_input, model_output


def padded_side(n: int, scale: int, multiple: int) -> int:
    """The smallest LR side >= ``n`` whose HR side (``scale`` x it) is a multiple of ``multiple``."""
    step = multiple // math.gcd(multiple, scale)
    return -(-n // step) * step


def seed_of(generator: torch.Generator | int | None, default: int) -> int:
    """The sampler's seed: a generator's own seed, an int itself, None the pipeline's."""
    if generator is None:
        return default
    return int(generator.initial_seed()) if isinstance(generator, torch.Generator) else int(generator)


class UntrainedTimestepsWarning(UserWarning):
    """The sampler asks the model for predictions below ``diffusion t_min``, where it never trained."""


class DiTSRPipeline:
    """A trained generator, its latent space, noise schedule and sampling settings, and the scale."""

    def __init__(self, denoiser, latent, diffusion: Diffusion, sampling: Eval, scale: int, crop: int, source=None):
        self.denoiser, self.latent = denoiser.eval(), latent
        self.diffusion, self.sampling, self.scale, self.crop = diffusion, sampling, scale, crop
        self.source: dict = dict(source or {})
        self.placement = place("cpu", "fp32")

    # ---- loading and saving ---------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> DiTSRPipeline:
        """The pipeline of a folder ``save_pretrained`` (or ``export --merge``) wrote."""
        return cls(*load_folder(Path(folder)))

    @classmethod
    def from_run(cls, target: str | os.PathLike, ema: bool = True, note=lambda line: None) -> DiTSRPipeline:
        """The pipeline of a run folder (its newest complete checkpoint) or of ``RUN/checkpoints/step-N``:
        the EMA weights unless ``ema`` is False (or the checkpoint has none)."""
        return cls(*load_run(Path(target), ema, note))

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write the self-describing folder (it must be new or empty)."""
        return save_folder(self, Path(folder))

    def parts(self) -> tuple[dict, Any, dict[str, torch.Tensor]]:
        """(the transformer's calling convention, the diffusers transformer, the extra tensors)."""
        if isinstance(self.denoiser, ExportedDenoiser):
            extra = dict(self.denoiser.extra_tensors())
            return self.denoiser.spec, self.denoiser.transformer, extra
        return describe(self.denoiser)

    def to(self, device: str | torch.device) -> DiTSRPipeline:
        """Move to ``device`` (``cuda``: bf16 autocast; ``cpu``: fp32)."""
        self.placement = place(str(device), "auto")
        self.denoiser.to(self.placement.device)
        self.latent.to(self.placement.device)
        return self

    @property
    def device(self) -> torch.device:
        return self.placement.device

    # ---- sampling -------------------------------------------------------------------------------------

    def settings(self, **changes) -> Eval:
        """The sampling settings with ``changes`` (None leaves a setting as it is), validated."""
        given = {k: v for k, v in changes.items() if v is not None}
        unknown = sorted(set(given) - set(SAMPLING_KEYS))
        if unknown:
            raise TypeError(f"unknown sampling settings {unknown}; they are {', '.join(SAMPLING_KEYS)}")
        return Eval.model_validate({**self.sampling.model_dump(), **given})

    def tiles(self, width: int, height: int, settings: Eval | None = None) -> tuple[int, int]:
        """(the tile side in output pixels, the number of tiles) for an LR image of ``width`` x ``height``."""
        from ..validate.tiled import latent_tiling, square_only

        m = self.latent.factor * patch_size(self.denoiser)
        h = padded_side(height, self.scale, m) * self.scale // self.latent.factor
        w = padded_side(width, self.scale, m) * self.scale // self.latent.factor
        square = square_only(self.denoiser)
        tiling = latent_tiling(
            h, w, settings or self.sampling, self.crop, self.latent.factor, patch_size(self.denoiser), square
        )
        return min(tiling.tile, max(h, w)) * self.latent.factor, tiling.count

    def upscale_tensor(self, lr: torch.Tensor, settings: Eval | None = None, on_tile=None) -> torch.Tensor:
        """SR of LR images (N x 3 x h x w in [-1, 1], any size) -> N x 3 x (scale h) x (scale w): padded
        (edge pixels repeated) to what the model takes, the padding cropped off the SR."""
        settings = settings or self.sampling
        h, w = lr.shape[-2:]
        m = self.latent.factor * patch_size(self.denoiser)
        ph, pw = padded_side(h, self.scale, m), padded_side(w, self.scale, m)
        padded = F.pad(lr.float(), (0, pw - w, 0, ph - h), mode="replicate") if (ph, pw) != (h, w) else lr.float()
        size = (ph * self.scale, pw * self.scale)

        def lr_up() -> torch.Tensor:  # validation's bicubic upsampling (degradation.upsample), clamped in place
            return F.interpolate(padded, size=size, mode="bicubic", align_corners=False).clamp_(-1, 1)

        sr = sample(self.denoiser, self.latent, self.diffusion, lr_up, settings, self.placement, self.crop, on_tile)
        return sr[..., : h * self.scale, : w * self.scale].cpu()

    def __call__(
        self,
        image,
        num_inference_steps: int | None = None,
        generator: torch.Generator | int | None = None,
        *,
        outscale: float | None = None,
        on_tile=None,
        **sampling,
    ) -> list:
        """SR of a PIL image (or a list of them) -> a list of PIL images, each ``scale`` x its size (or
        ``outscale`` x, by a final Lanczos resize); grayscale, 16-bit and alpha kept (alpha resized on its
        own). ``sampling``: lq_init, cfg, tile, overlap, color_fix, spacing, start_noise, guidance_drops (None:
        the pipeline's)."""
        settings = self.settings(steps=num_inference_steps, seed=seed_of(generator, self.sampling.seed), **sampling)
        untrained = below_t_min(settings, self.diffusion)
        if untrained:
            warnings.warn(f"the {untrained}", UntrainedTimestepsWarning, stacklevel=2)
        images = list(image) if isinstance(image, list | tuple) else [image]
        out = []
        for im in images:
            given = model_input(im)
            sr = self.upscale_tensor(given.rgb, settings, on_tile)
            size = None
            if outscale is not None:
                size = (max(1, round(im.size[0] * outscale)), max(1, round(im.size[1] * outscale)))
            out.append(model_output(sr, given, size))
        return out
