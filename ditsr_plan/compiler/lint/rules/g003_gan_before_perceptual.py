from collections.abc import Iterator

from ditsr_plan.diagnostics import Diagnostic

from ..rule import Rule, intersect, step, subtract


class GanBeforePerceptual(Rule):
    """A GAN above 0 while LPIPS is still 0 or still in its first ramp up from 0.

    Why: the recommended order is reconstruction, then perceptual, then adversarial last
    (loss notes, 5); a GAN that starts before the perceptual term has settled dominates it.

    Example:
        stage B 0..: lpips 0->0.5 linear over 5k; gan 0->0.03 linear after 2k over 4k

    Fix: start the GAN after the LPIPS ramp has reached its plateau (in a later stage).
    """

    code = "G003"
    name = "gan-before-perceptual"

    def check(self) -> Iterator[Diagnostic]:
        gans = self.ctx.terms("patchgan")
        if not gans:
            return
        total = self.graph.total_steps
        settled = total
        for term in self.ctx.terms("lpips"):
            knob = self.ctx.knob(term)
            rise = next((p for p in knob.pieces if p.peak > 0), None)
            if rise is not None:
                settled = min(settled, rise.end if rise.shape != "const" and rise.v0 == 0 else rise.start)
        allowed = intersect(self.ctx.live("lpips"), ((settled, total),)) if settled < total else ()
        for term in gans:
            early = subtract(self.ctx.knob(term).live, allowed)
            if early:
                first = early[0][0]
                why = (
                    "no LPIPS term is live then"
                    if not intersect(((first, first + 1),), self.ctx.live("lpips"))
                    else f"LPIPS is still in its first ramp (until step {step(settled)})"
                )
                yield self.finding(
                    f"GAN '{term.name}' is above 0 from step {step(first)}, but {why}",
                    self.ctx.origin(term, first),
                    "perceptual first, adversarial last: start the GAN once LPIPS has reached its plateau",
                )
