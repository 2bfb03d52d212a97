"""How a run was started: the plan, the time scale and every ``--set``, kept in ``RUN/run.json`` so that
``--resume`` continues the same run without being told them again, and the resume hint can print the exact
command. Imports no torch."""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import RunFailure

FILE = "run.json"


class InvocationError(RunFailure):
    """``run.json`` cannot be read."""


@dataclass(frozen=True)
class Invocation:
    plan: str
    time_scale: float = 1.0
    overrides: tuple[str, ...] = field(default_factory=tuple)

    def command(self, run_dir: Path) -> str:
        """The command that resumes this run exactly."""
        parts = ["ditsr-plan", "run", self.plan, "--out", str(run_dir)]
        if self.time_scale != 1:
            parts += ["--time-scale", f"{self.time_scale:g}"]
        for item in self.overrides:
            parts += ["--set", item]
        return shlex.join([*parts, "--resume"])

    def differences(self, other: Invocation) -> list[str]:
        """What differs from ``other`` (the run's own), in words."""
        out = []
        if self.plan != other.plan:
            out.append(f"the plan: the run's is {other.plan}, this one {self.plan}")
        if self.time_scale != other.time_scale:
            out.append(f"the time scale: the run's is {other.time_scale:g}, this one {self.time_scale:g}")
        mine, theirs = set(self.overrides), set(other.overrides)
        if mine != theirs:
            added = ", ".join(sorted(mine - theirs)) or "none"
            missing = ", ".join(sorted(theirs - mine)) or "none"
            out.append(f"the --set overrides: added {added}; missing {missing}")
        return out

    def save(self, run_dir: Path) -> None:
        data = {**asdict(self), "overrides": list(self.overrides)}
        (run_dir / FILE).write_text(json.dumps(data, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, run_dir: Path) -> Invocation | None:
        """The run's invocation; None without ``run.json``. A ``run.json`` that is cut short or not of this
        shape raises :class:`InvocationError`."""
        path = run_dir / FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            invocation = cls(str(data["plan"]), float(data["time_scale"]), tuple(str(o) for o in data["overrides"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvocationError(
                f"{path} is damaged ({type(exc).__name__}: {str(exc)[:100]}): it records how the run was started. "
                "Remove it and resume with the run's plan, --time-scale and --set given again"
            ) from None
        if not isinstance(data["overrides"], list):
            raise InvocationError(f"{path} is damaged ('overrides' is not a list); remove it and resume explicitly")
        return invocation
