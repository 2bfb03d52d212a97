from collections.abc import Iterator

from ditsr_plan.diagnostics import Diagnostic
from ditsr_plan.settings.numbers import format_value

from ..rule import Rule, step


class JumpWithoutRamp(Rule):
    """A weight that jumps up after step 0 without a ramp: from 0, or by more than 25% of its peak.

    Why: switching a constraint on at full weight disturbs the main reconstruction objective;
    the loss notes (3.3) added warm-up and ramp steps to the edge loss for exactly this reason.
    Lowering a weight, or switching a term off, is not flagged.

    Example:
        stage A 0..3k: v 1
        stage B 3k..:  edge 0.1               # edge jumps from 0 to 0.1 at step 3k

    Fix: ramp the weight in: `edge 0->0.1 linear over 2k`, or `edge ->0.1` to ramp from the
    value carried in. Parameter `max_jump` (default 0.25) is the fraction of the peak allowed.
    """

    code = "W001"
    name = "jump-without-ramp"
    params = {"max_jump": 0.25}

    def check(self) -> Iterator[Diagnostic]:
        for term in self.graph.terms.values():
            knob = self.ctx.knob(term)
            peak = knob.peak
            for prev, cur in zip(knob.pieces, knob.pieces[1:], strict=False):
                before, after = prev.v1, cur.v0
                jump = after - before
                if jump > 0 and (before == 0 or jump > self.p["max_jump"] * peak):
                    yield self.finding(
                        f"'{term.name}' jumps from {format_value(before)} to {format_value(after)} at step "
                        f"{step(cur.start)} without a ramp",
                        cur.origin or term.origin,
                        f"ramp it in: '{term.name} {format_value(before)}->{format_value(after)} linear over N'",
                    )
