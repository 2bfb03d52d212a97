from collections.abc import Iterator

from ditsr_plan.diagnostics import Diagnostic
from ditsr_plan.settings.schemas import PixartModel

from ..rule import Rule


class AdapterCannotLearn(Rule):
    """The pyramid adapter's spatial path gets no gradient: zero-initialised heads feed zero-initialised projections.

    Why: with `adapter=pyramid pyramid_heads=zero` (the reference scripts' init) each head's last conv
    outputs 0, and the injection's modulation and residual projections start at 0 too. The gradient of a
    linear layer's weight is its input times the gradient of its output, and the gradient of its input is
    the weight times that gradient: the projections' weights see a zero input, the heads a zero gradient,
    at every step. Only the modulation biases, the gate and the style vector train; the pyramid and its
    heads (about 110M parameters at PixArt-XL/2 shape) carry optimiser state and EMA and never change.

    Example:
        model pixart path=... cond=concat+adapter adapter=pyramid

    Fix: `pyramid_heads=default` (PyTorch's init on the heads' last conv: step 0 still equals the base
    model, the projections start at 0); keep `zero` with `# noqa: A001` only to reproduce the scripts.
    """

    code = "A001"
    name = "adapter-cannot-learn"

    def check(self) -> Iterator[Diagnostic]:
        block = self.graph.blocks.get("model")
        if block is None or not isinstance(block.settings, PixartModel):
            return
        model = block.settings
        if "adapter" in model.cond and model.adapter == "pyramid" and model.pyramid_heads == "zero":
            yield self.finding(
                "the pyramid adapter's heads and the injection's projections all start at 0: the adapter's "
                "spatial path never gets a gradient (only the style vector and the modulation biases train)",
                block.value_origins.get("adapter", block.origin),
                "set pyramid_heads=default (step 0 still equals the base model), or '# noqa: A001' to reproduce "
                "the scripts",
            )
