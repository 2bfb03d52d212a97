from collections.abc import Iterator

from ditsr_plan.diagnostics import Diagnostic
from ditsr_plan.settings.numbers import format_value

from ..rule import Rule, intersect, step

SAMPLES = 16


class FlatBelowEdge(Rule):
    """A flat weight below the edge weight while both are live.

    Why: the loss notes (5, stage B) recommend the flat weight slightly above the edge weight, so
    that chaotic texture in defocus regions is suppressed before edges are sharpened.

    Example:
        stage B 3k..: edge 0->0.10 linear; flat 0->0.05 linear

    Fix: raise flat above edge (e.g. edge 0.06, flat 0.08).
    """

    code = "R002"
    name = "flat-below-edge"

    def check(self) -> Iterator[Diagnostic]:
        edges, flats = self.ctx.terms("edge"), self.ctx.terms("flat")
        if not edges or not flats:
            return
        both = intersect(self.ctx.live("edge"), self.ctx.live("flat"))
        knobs = [self.ctx.knob(t) for t in (*edges, *flats)]
        cuts = sorted({b for k in knobs for p in k.pieces for b in (p.start, p.end)})
        for lo, hi in both:
            inner = [c for c in cuts if lo < c < hi]
            for a, b in zip([lo, *inner], [*inner, hi], strict=True):
                for s in sorted({a, b - 1, *(a + (b - 1 - a) * i // SAMPLES for i in range(SAMPLES))}):
                    edge = sum(self.ctx.knob(t).at(s) for t in edges)
                    flat = sum(self.ctx.knob(t).at(s) for t in flats)
                    if flat < edge - 1e-12:
                        yield self.finding(
                            f"flat weight {format_value(round(flat, 6))} is below edge weight "
                            f"{format_value(round(edge, 6))} at step {step(s)}",
                            self.ctx.origin(flats[0], s),
                            "keep flat slightly above edge (the notes: edge 0.06, flat 0.08)",
                        )
                        return
