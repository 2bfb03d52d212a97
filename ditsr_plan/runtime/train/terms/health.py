"""A diverging discriminator, flagged in the log and the report.

After every discriminator step its loss is checked against the term's ``d_collapse`` and ``d_explode``:

- **collapse**: D loss below ``d_collapse`` (default 0.05) for ``d_patience`` (100) D steps in a row --
  D tells real from fake with a margin everywhere, and the generator's adversarial gradient carries
  little information (hinge D loss is 2 at equilibrium, non-saturating 2 ln 2);
- **explosion**: D loss above ``d_explode`` (default 10) or not finite, ``d_patience`` steps in a row.

A flag is raised once per episode (when the streak reaches ``d_patience``) and again only after the loss
has come back inside the band. The streaks are saved in every checkpoint, so a resumed run goes on
counting where it stopped. Flags do not stop the run: lower ``lr_d``, raise R1 or lower the GAN
weight (or add a ``watch`` on a validation metric to stop it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ditsr_plan.settings.schemas import PatchGan


@dataclass
class _Streak:
    kind: str | None = None
    length: int = 0
    flagged: bool = False


@dataclass
class DiscriminatorHealth:
    """The health of one PatchGAN term's discriminator."""

    name: str
    settings: PatchGan  # the term's settings
    streak: _Streak = field(default_factory=_Streak)

    def check(self, step: int, record: dict) -> list[dict]:
        """New flags after the D step of ``step`` (``record``: that step's D record)."""
        s = self.settings
        loss = record.get("loss")
        if loss is None or not math.isfinite(loss) or loss > s.d_explode:
            kind = "explode"
        elif loss < s.d_collapse:
            kind = "collapse"
        else:
            kind = None
        if kind != self.streak.kind:
            self.streak = _Streak(kind)
        if kind is None:
            return []
        self.streak.length += 1
        if self.streak.length < s.d_patience or self.streak.flagged:
            return []
        self.streak.flagged = True
        return [
            {
                "flag": f"discriminator_{kind}",
                "term": self.name,
                "step": step,
                "d_loss": loss,
                "steps": self.streak.length,
                "message": _message(self.name, kind, loss, self.streak.length, s),
            }
        ]

    def state(self) -> dict:
        """The streak, for a checkpoint."""
        return {"kind": self.streak.kind, "length": self.streak.length, "flagged": self.streak.flagged}

    def restore(self, state: dict) -> None:
        self.streak = _Streak(**state) if state else _Streak()


def _message(name: str, kind: str, loss: float | None, steps: int, s: PatchGan) -> str:
    d_loss = "not finite" if loss is None else f"{loss:.3g}"
    if kind == "collapse":
        return (
            f"discriminator of '{name}' collapsed: D loss {d_loss} < d_collapse={s.d_collapse:g} for {steps} "
            "D steps (D wins everywhere; the generator's GAN gradient says little): lower lr_d or raise r1"
        )
    return (
        f"discriminator of '{name}' exploded: D loss {d_loss} > d_explode={s.d_explode:g} for {steps} "
        "D steps: lower lr_d or the GAN weight"
    )
