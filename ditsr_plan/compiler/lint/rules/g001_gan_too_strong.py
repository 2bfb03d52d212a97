from collections.abc import Iterator

from ditsr_plan.diagnostics import Diagnostic
from ditsr_plan.settings.numbers import format_value

from ..rule import Rule


class GanTooStrong(Rule):
    """A GAN whose peak weight is above 0.05.

    Why: the loss notes (5, stage C) warn that the scripts' GAN weight of 0.08 is too large and
    easily drives texture hallucination or instability; the GAN is the final finisher, not the
    dominant term (recommended 0 -> 0.03).

    Example:
        stage C 9k..: gan 0->0.08 linear over 4k

    Fix: lower the peak to 0.03 or so. Parameter `max` (default 0.05).
    """

    code = "G001"
    name = "gan-too-strong"
    params = {"max": 0.05}

    def check(self) -> Iterator[Diagnostic]:
        for term in self.ctx.terms("patchgan"):
            peak = self.ctx.knob(term).peak
            if peak > self.p["max"]:
                yield self.finding(
                    f"GAN '{term.name}' peaks at {format_value(peak)}, above {format_value(self.p['max'])}",
                    self.ctx.peak_origin(term),
                    "the notes recommend a GAN weight of about 0.03, ramped in slowly",
                )
