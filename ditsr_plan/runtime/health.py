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


@dataclass
class _Streak:
    kind: str | None = None
    length: int = 0
    flagged: bool = False


@dataclass
class DiscriminatorHealth:
    settings: dict[str, dict]  # term name -> its patchgan settings
    streaks: dict[str, _Streak] = field(default_factory=dict)

    def check(self, step: int, discriminator: dict[str, dict]) -> list[dict]:
        """New flags after the D steps of ``step`` (term name -> the record of its D step)."""
        flags = []
        for name, record in discriminator.items():
            s = self.settings[name]
            loss = record.get("loss")
            if loss is None or not math.isfinite(loss) or loss > s["d_explode"]:
                kind = "explode"
            elif loss < s["d_collapse"]:
                kind = "collapse"
            else:
                kind = None
            streak = self.streaks.setdefault(name, _Streak())
            if kind != streak.kind:
                self.streaks[name] = streak = _Streak(kind)
            if kind is None:
                continue
            streak.length += 1
            if streak.length >= s["d_patience"] and not streak.flagged:
                streak.flagged = True
                flags.append(
                    {
                        "flag": f"discriminator_{kind}",
                        "term": name,
                        "step": step,
                        "d_loss": loss,
                        "steps": streak.length,
                        "message": _message(name, kind, loss, streak.length, s),
                    }
                )
        return flags

    def state(self) -> dict:
        """The streaks, for a checkpoint."""
        return {n: {"kind": s.kind, "length": s.length, "flagged": s.flagged} for n, s in self.streaks.items()}

    def restore(self, state: dict) -> None:
        self.streaks = {n: _Streak(**s) for n, s in state.items()}


def _message(name: str, kind: str, loss: float, steps: int, s: dict) -> str:
    if kind == "collapse":
        return (
            f"discriminator of '{name}' collapsed: D loss {loss:.3g} < d_collapse={s['d_collapse']:g} for {steps} "
            "D steps (D wins everywhere; the generator's GAN gradient says little): lower lr_d or raise r1"
        )
    return (
        f"discriminator of '{name}' exploded: D loss {loss:.3g} > d_explode={s['d_explode']:g} for {steps} "
        "D steps: lower lr_d or the GAN weight"
    )
