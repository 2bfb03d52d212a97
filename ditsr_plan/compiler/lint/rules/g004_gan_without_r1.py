from collections.abc import Iterator

from ditsr_plan.diagnostics import Diagnostic
from ditsr_plan.settings.schemas import PatchGan

from ..rule import Rule


class GanWithoutR1(Rule):
    """A GAN that is used with its R1 penalty turned off (`r1=0`).

    Why: the reference setup regularises the PatchGAN with R1 (gamma 10, every 16 steps); without
    it the discriminator's gradients on real patches grow unchecked and training becomes unstable
    (loss notes, 1: v9_gan adds R1 with the GAN).

    Example:
        loss gan patchgan r1=0

    Fix: keep R1 on: `r1=10 r1_every=16`.
    """

    code = "G004"
    name = "gan-without-r1"

    def check(self) -> Iterator[Diagnostic]:
        for term in self.ctx.terms("patchgan"):
            if self.ctx.knob(term).live and isinstance(term.settings, PatchGan) and term.settings.r1 == 0:
                yield self.finding(
                    f"GAN '{term.name}' is used with R1 off (r1=0)",
                    term.setting_origins.get("r1", term.origin),
                    "set r1=10 (r1_every=16)",
                )
