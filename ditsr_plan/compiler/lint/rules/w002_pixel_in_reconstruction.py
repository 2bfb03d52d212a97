from collections.abc import Iterator

from ditsr_plan.diagnostics import Diagnostic

from ..rule import Rule, intersect, step


class PixelInReconstruction(Rule):
    """A pixel-space term (lpips, edge, flat, ffl, gan) above 0 in the reconstruction stage.

    Why: the first stage anchors the reconstruction (v and latent L1 only); perceptual and region
    terms that act this early cause mode drift (loss notes, 5, stage A). The reconstruction stage
    is the first stage; in a one-stage plan, the first 20% of the steps.

    Example:
        stage A 0..3k: v 1; latent_l1 1; lpips 0.1
        stage B 3k..:  lpips 0.1

    Fix: start pixel-space terms in a later stage, ramping from 0. Parameter `fraction`
    (default 0.2) sets the window of a one-stage plan.
    """

    code = "W002"
    name = "pixel-in-reconstruction"
    params = {"fraction": 0.2}

    def check(self) -> Iterator[Diagnostic]:
        stages = self.graph.stages
        if len(stages) > 1:
            window, where = (0, stages[0].end), f"reconstruction stage {stages[0].name}"
        else:
            end = max(1, round(self.graph.total_steps * self.p["fraction"]))
            window, where = (0, end), f"first {self.p['fraction']:.0%} of the steps (0..{step(end)})"
        for term in self.graph.terms.values():
            if not term.pixel:
                continue
            overlap = intersect(self.ctx.knob(term).live, (window,))
            if overlap:
                first = overlap[0][0]
                yield self.finding(
                    f"pixel-space term '{term.name}' ({term.kind}) is above 0 in the {where}, from step {step(first)}",
                    self.ctx.origin(term, first),
                    "keep the reconstruction stage to v-prediction and latent L1; start this term later",
                )
