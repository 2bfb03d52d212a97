from collections.abc import Iterator

from ditsr_plan.diagnostics import Diagnostic

from ..rule import Rule


class PatchTooSmall(Rule):
    """A pixel patch smaller than 128 px while pixel-space terms are live.

    Why: pixel-loss patches that are too small (and too randomly placed) cannot drive structure
    recovery stably; the loss notes (2.2) name this among the causes of lasting blur. The
    reference setup decodes a 256 px patch.

    Example:
        pixel patch=64

    Fix: `pixel patch=256` (or at least 128). Parameter `min` (default 128).
    """

    code = "M001"
    name = "patch-too-small"
    params = {"min": 128}

    def check(self) -> Iterator[Diagnostic]:
        pixel = self.graph.blocks["pixel"]
        patch = self.graph.block("pixel").patch
        if self.graph.pixel_ranges and patch < self.p["min"]:
            yield self.finding(
                f"the pixel patch is {patch} px, below {int(self.p['min'])} px, while pixel-space terms are live",
                pixel.value_origins.get("patch", pixel.origin),
                "use 'pixel patch=256'",
            )
