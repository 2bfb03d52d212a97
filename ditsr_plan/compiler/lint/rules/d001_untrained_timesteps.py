from collections.abc import Iterator

from ditsr_plan.diagnostics import Diagnostic
from ditsr_plan.settings.schemas import Diffusion, Eval

from ..rule import Rule


def lowest_timestep(evaluation: Eval, diffusion: Diffusion) -> int:
    """The last (lowest) timestep the eval's DDIM sampler predicts at: diffusers' ``set_timesteps`` gives
    ``leading`` ``0, T//n, ...`` and ``trailing`` ``round(T - k*T/n) - 1`` for ``k < n`` (its last is
    ``round(T/n) - 1``). ``lq_init`` skips the first (highest) ones, never the last."""
    total, steps = diffusion.train_steps, evaluation.steps
    if evaluation.spacing == "leading":
        return 0
    return max(0, round(total / steps) - 1)


class UntrainedTimesteps(Rule):
    """The eval's sampler predicts at timesteps below `diffusion t_min`, where the model never trained.

    Why: with `t_min` the training timesteps are drawn from `t_min` up only (for a model sampled in one step
    from the last timestep); every step the sampler takes below it asks the model for a prediction it has
    never been trained to make, and the eval (and `upscale`) show that untrained output as the model's.

    Example:
        diffusion t_min=900
        eval steps=50

    Fix: `eval steps=1 spacing=trailing` (one step, from the last timestep), or lower `t_min` to the
    sampler's last timestep.
    """

    code = "D001"
    name = "untrained-timesteps"

    def check(self) -> Iterator[Diagnostic]:
        block, evaluation = self.graph.blocks.get("diffusion"), self.graph.blocks.get("eval")
        if block is None or evaluation is None:
            return
        diffusion = block.settings
        assert isinstance(diffusion, Diffusion) and isinstance(evaluation.settings, Eval)
        lowest = lowest_timestep(evaluation.settings, diffusion)
        if diffusion.t_min > lowest:
            yield self.finding(
                f"the eval's sampler ({evaluation.settings.steps} steps, {evaluation.settings.spacing} spacing) "
                f"ends at timestep {lowest}, below diffusion t_min={diffusion.t_min}: the model never trains there",
                block.value_origins.get("t_min", block.origin),
                "sample in one step from the last timestep ('eval steps=1 spacing=trailing'), or lower t_min",
            )
