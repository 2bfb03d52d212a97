from collections.abc import Iterator

from ditsr_plan.diagnostics import Diagnostic
from ditsr_plan.settings.numbers import format_value

from ..rule import Rule, step


class GanRampTooShort(Rule):
    """A GAN ramp from 0 to its peak that takes fewer than 4k steps.

    Why: the loss notes (5, stage C) ask for a slow GAN ramp of at least 4k steps, so that the
    discriminator's push grows while the generator can follow.

    Example:
        stage C 9k..: gan 0->0.03 linear over 1k

    Fix: ramp over 4k steps or more: `gan 0->0.03 linear over 4k`. Parameter `min_steps`
    (default 4000), scaled with `--time-scale`.
    """

    code = "G002"
    name = "gan-ramp-too-short"
    params = {"min_steps": 4000}

    def check(self) -> Iterator[Diagnostic]:
        for term in self.ctx.terms("patchgan"):
            knob = self.ctx.knob(term)
            if not knob.live:
                continue
            first = knob.live[0][0]
            rise = knob.piece_at(first)
            start = rise.start if rise.shape != "const" and rise.v0 == 0 else first
            peak = knob.peak
            top = next(p for p in knob.pieces if p.end > first and p.peak >= peak)
            reached = top.start if top.v0 >= peak else top.end
            minimum = self.ctx.steps(int(self.p["min_steps"]))
            if reached - start < minimum:
                yield self.finding(
                    f"GAN '{term.name}' goes from 0 to its peak {format_value(peak)} in {step(reached - start)} "
                    f"steps ({step(start)}..{step(reached)}); ramp over at least {step(minimum)}",
                    rise.origin or term.origin,
                    f"write '{term.name} 0->{format_value(peak)} linear over {step(minimum)}'",
                )
