from collections.abc import Iterator

from ditsr_plan.diagnostics import Diagnostic
from ditsr_plan.settings.numbers import format_value

from ..rule import Rule


class FflTooStrong(Rule):
    """A Focal Frequency Loss weight above 0.01.

    Why: FFL spreads frequency-domain error uniformly and so "adds texture everywhere", including
    in defocus regions that must stay smooth; the loss notes (6) keep it, if at all, at 0.003-0.01.

    Example:
        stage A 0..: ffl 0.1

    Fix: lower the weight to 0.01 or less, late in training, or use `mask=edge`.
    Parameter `max` (default 0.01).
    """

    code = "F001"
    name = "ffl-too-strong"
    params = {"max": 0.01}

    def check(self) -> Iterator[Diagnostic]:
        for term in self.ctx.terms("ffl"):
            peak = self.ctx.knob(term).peak
            if peak > self.p["max"]:
                yield self.finding(
                    f"FFL '{term.name}' peaks at {format_value(peak)}, above {format_value(self.p['max'])}",
                    self.ctx.peak_origin(term),
                    "keep FFL at 0.003-0.01 (loss notes, 6)",
                )
