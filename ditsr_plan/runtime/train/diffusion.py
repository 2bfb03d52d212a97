"""The diffusion process: diffusers' DDPMScheduler with v-prediction.

``v = alpha_t * noise - sigma_t * x0`` (diffusers' ``get_velocity``) and the reconstruction
``x0_hat = alpha_t * x_t - sigma_t * v_hat``, with ``alpha_t = sqrt(alphas_cumprod[t])`` and
``sigma_t = sqrt(1 - alphas_cumprod[t])``. SNR is diffusers' ``compute_snr``.

Training (DDPM) and validation (DDIM) schedulers are both built by :func:`make_scheduler` from the
plan's ``diffusion`` settings, so that they share one noise schedule.
"""

from __future__ import annotations

import torch

from ditsr_plan.settings import schemas


def make_scheduler(kind: str, settings: schemas.Diffusion, spacing: str = "leading"):
    """A diffusers scheduler (``ddpm`` for training, ``ddim`` for sampling) of the plan's noise schedule,
    predicting v; ``spacing`` is the DDIM sampler's ``timestep_spacing`` (``leading``, diffusers' default, or
    ``trailing``)."""
    common = {
        "num_train_timesteps": settings.train_steps,
        "beta_schedule": settings.beta_schedule,
        "beta_start": settings.beta_start,
        "beta_end": settings.beta_end,
        "prediction_type": "v_prediction",
    }
    if kind == "ddpm":
        from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

        return DDPMScheduler(**common)
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler

    return DDIMScheduler(
        **common, clip_sample=False, set_alpha_to_one=settings.set_alpha_to_one, timestep_spacing=spacing
    )


class Diffusion:
    def __init__(self, settings: schemas.Diffusion, device: torch.device):
        self.scheduler = make_scheduler("ddpm", settings)
        self.train_steps, self.t_min = settings.train_steps, settings.t_min
        alphas_cumprod = self.scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
        self.alpha = alphas_cumprod.sqrt()
        self.sigma = (1 - alphas_cumprod).sqrt()

    def _at(self, table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return table[t].view(-1, 1, 1, 1)

    def sample_timesteps(self, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """``n`` training timesteps, uniform in ``t_min .. train_steps - 1`` (``diffusion t_min``)."""
        return torch.randint(self.t_min, self.train_steps, (n,), generator=generator, device="cpu").to(device)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.scheduler.add_noise(x0, noise, t)

    def velocity(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.scheduler.get_velocity(x0, noise, t)

    def reconstruct_x0(self, x_t: torch.Tensor, v_hat: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._at(self.alpha, t) * x_t - self._at(self.sigma, t) * v_hat

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        from diffusers.training_utils import compute_snr

        return compute_snr(self.scheduler, t)
