from collections.abc import Iterator

from ditsr_plan.diagnostics import Diagnostic

from ..rule import Rule


class GanWithoutEma(Rule):
    """A GAN in a plan without an EMA of the generator.

    Why: adversarial training makes the generator's weights oscillate; the reference setup keeps
    an EMA (decay 0.999) and validates with it (loss notes, 1: v9_gan adds EMA with the GAN).

    Example:
        loss gan patchgan
        stage C 9k..: gan 0->0.03 linear over 4k     # and no 'ema' line

    Fix: add `ema decay=0.999`.
    """

    code = "G005"
    name = "gan-without-ema"

    def check(self) -> Iterator[Diagnostic]:
        ema = self.graph.block("ema")
        if ema is not None and ema.decay > 0:
            return
        for term in self.ctx.terms("patchgan"):
            if self.ctx.knob(term).live:
                yield self.finding(
                    f"GAN '{term.name}' is used but the plan keeps no EMA of the generator",
                    term.origin,
                    "add 'ema decay=0.999'",
                )
