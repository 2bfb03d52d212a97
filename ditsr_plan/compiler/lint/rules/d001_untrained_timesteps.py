from collections.abc import Iterator

from ditsr_plan.diagnostics import Diagnostic
from ditsr_plan.settings.schemas import Diffusion, Eval
from ditsr_plan.settings.timesteps import below_t_min

from ..rule import Rule


class UntrainedTimesteps(Rule):
    """The eval's sampler predicts at timesteps below `diffusion t_min`, where the model never trained.

    Why: with `t_min` the training timesteps are drawn from `t_min` up only (for a model sampled in one step
    from the last timestep); every step the sampler takes below it asks the model for a prediction it has
    never been trained to make, and the eval, `evaluate`, `upscale` and an exported pipeline show that
    untrained output as the model's. Without an eval block they sample with its defaults (50 leading steps,
    down to t = 0).

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
        if block is None:
            return
        diffusion = block.settings
        sampling = evaluation.settings if evaluation is not None else Eval()
        assert isinstance(diffusion, Diffusion) and isinstance(sampling, Eval)
        why = below_t_min(sampling, diffusion)
        if why:
            whose = "the eval's" if evaluation is not None else "with no eval block, evaluate's and upscale's default"
            yield self.finding(
                f"{whose} {why}",
                block.value_origins.get("t_min", block.origin),
                "sample in one step from the last timestep ('eval steps=1 spacing=trailing'), or lower t_min",
            )
