"""Which diffusion timesteps a sampler visits, from the settings alone (no torch, no diffusers): what the lint
rule D001 and ``upscale`` compare with ``diffusion t_min``, the lowest timestep a model was trained at."""

from __future__ import annotations

from .schemas import Diffusion, Eval


def lowest_timestep(evaluation: Eval, diffusion: Diffusion) -> int:
    """The last (lowest) timestep the DDIM sampler of ``evaluation`` predicts at: diffusers' ``set_timesteps``
    gives ``leading`` ``0, T//n, ...`` and ``trailing`` ``round(T - k*T/n) - 1`` for ``k < n`` (its last is
    ``round(T/n) - 1``). ``lq_init`` skips the first (highest) ones, never the last."""
    if evaluation.spacing == "leading":
        return 0
    return max(0, round(diffusion.train_steps / evaluation.steps) - 1)


def below_t_min(evaluation: Eval, diffusion: Diffusion) -> str | None:
    """Why ``evaluation``'s sampler asks a model trained from ``diffusion.t_min`` up for an untrained
    prediction, in words, or None."""
    lowest = lowest_timestep(evaluation, diffusion)
    if diffusion.t_min <= lowest:
        return None
    return (
        f"sampler ({evaluation.steps} step{'s' if evaluation.steps != 1 else ''}, {evaluation.spacing} spacing) "
        f"ends at timestep {lowest}, below "
        f"diffusion t_min={diffusion.t_min}: the model never trained there"
    )
