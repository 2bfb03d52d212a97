from collections.abc import Iterator

from ditsr_plan.diagnostics import Diagnostic

from ..rule import Rule


class NeverTrained(Rule):
    """A declared loss term whose weight is never above 0.

    Why: a term that is declared but never weighted is a loss you believe is in effect and is not.
    This is the edge_gtmask bug of the loss notes (3.1): edge and flat losses were defined and
    added to the total with a weight, but never computed, so they contributed nothing.

    Example:
        loss edge edge
        stage A 0..: v 1; latent_l1 1        # edge is never given a weight

    Fix: give the term a weight (best with a ramp) in the stage where it should act, or remove
    the declaration if the plan is not meant to use it.
    """

    code = "T001"
    name = "never-trained"

    def check(self) -> Iterator[Diagnostic]:
        for term in self.graph.terms.values():
            if not self.ctx.knob(term).live:
                yield self.finding(
                    f"term '{term.name}' ({term.kind}) is declared but its weight is never above 0",
                    term.origin,
                    f"give '{term.name}' a weight in a stage, or remove the declaration",
                )
