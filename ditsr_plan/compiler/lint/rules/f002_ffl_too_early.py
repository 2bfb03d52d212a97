from collections.abc import Iterator

from ditsr_plan.diagnostics import Diagnostic

from ..rule import Rule, intersect, step


class FflTooEarly(Rule):
    """A Focal Frequency Loss above 0 before the last stage.

    Why: FFL is not recommended as the main high-frequency driver; if kept, enable it only in the
    last stage with a very small weight (loss notes, 6).

    Example:
        stage B 3k..9k: ffl 0.005
        stage C 9k..:   gan 0->0.03 linear over 4k

    Fix: move the FFL statement to the last stage.
    """

    code = "F002"
    name = "ffl-too-early"

    def check(self) -> Iterator[Diagnostic]:
        last = self.graph.stages[-1]
        if last.start == 0:
            return
        for term in self.ctx.terms("ffl"):
            early = intersect(self.ctx.knob(term).live, ((0, last.start),))
            if early:
                first = early[0][0]
                yield self.finding(
                    f"FFL '{term.name}' is above 0 from step {step(first)}, before the last stage {last.name}",
                    self.ctx.origin(term, first),
                    f"start it in stage {last.name}",
                )
