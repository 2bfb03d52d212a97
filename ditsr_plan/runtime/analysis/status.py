"""Where a run stands, from its folder alone: finished (``summary.json``), stopped by a watch, or
unfinished -- interrupted or still running -- with the steps its newest checkpoint holds."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunStatus:
    finished: bool
    steps_done: int  # finished: the steps trained; else those the newest complete checkpoint holds
    total_steps: int
    stopped_by: dict | None = None

    def describe(self) -> str:
        if self.finished and self.stopped_by:
            return f"stopped after {self.steps_done} of {self.total_steps} steps by 'watch {self.stopped_by['watch']}'"
        if self.finished:
            return f"finished: {self.steps_done} steps"
        return (
            f"unfinished: {self.steps_done} of {self.total_steps} steps in its newest checkpoint "
            "(interrupted, or still running)"
        )


def run_status(run_dir: Path) -> RunStatus:
    plan = json.loads((run_dir / "plan.json").read_text())
    total = plan["total_steps"]
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        return RunStatus(True, summary["steps"], total, summary.get("stopped_by"))
    checkpoints = sorted(
        int(p.name.removeprefix("step-"))
        for p in (run_dir / "checkpoints").glob("step-*")
        if p.is_dir() and (p / "manifest.json").is_file()
    )
    return RunStatus(False, checkpoints[-1] if checkpoints else 0, total)
