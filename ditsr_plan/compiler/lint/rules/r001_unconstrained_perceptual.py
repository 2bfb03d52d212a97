from collections.abc import Iterator

from ditsr_plan.diagnostics import Diagnostic

from ..rule import Rule, step, subtract


class UnconstrainedPerceptual(Rule):
    """LPIPS, GAN or FFL above 0 while no flat (defocus) term is live.

    Why: perceptual and adversarial terms reward texture and local contrast; without a region
    constraint the model "texturises" low-frequency regions in exchange for perceptual score
    (loss notes, 2.1). A live flat term keeps defocus regions smooth.

    Example:
        loss lpips lpips
        stage A 0..: v 1; lpips 0->0.5 linear      # and no flat term

    Fix: declare `loss flat flat` and ramp it in with (or before) the perceptual terms.
    """

    code = "R001"
    name = "unconstrained-perceptual"

    def check(self) -> Iterator[Diagnostic]:
        flat = self.ctx.live("flat")
        for term in self.ctx.terms("lpips", "patchgan", "ffl"):
            bare = subtract(self.ctx.knob(term).live, flat)
            if bare:
                first = bare[0][0]
                yield self.finding(
                    f"'{term.name}' ({term.kind}) is above 0 from step {step(first)} while no flat term is live",
                    self.ctx.origin(term, first),
                    "add a flat-region term ('loss flat flat') live wherever perceptual terms are",
                )
