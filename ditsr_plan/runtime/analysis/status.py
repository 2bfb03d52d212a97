"""Where a run stands, from its folder alone: finished (``summary.json``), stopped by a watch, or
unfinished -- interrupted or still running -- with the steps its newest checkpoint holds. And the run's
``plan.json`` read strictly (:func:`read_graph`): a file that is cut short, of another version of the tool or
edited by hand is refused with a plain message, never half-read."""

from __future__ import annotations

import glob
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ditsr_plan.compiler.graph import GRAPH_FORMAT, ScheduleGraph

from ...terminal import shown
from ..errors import RunFailure


class RunFolderError(RunFailure):
    """A run folder (or a file in it) that cannot be read: what is wrong and what to do."""


def not_a_run(run_dir: Path) -> str:
    """Why ``run_dir`` is not a run folder, in words: missing (with the newest ``RUN-<time>`` beside it, as
    ``run`` names its folders) or without ``plan.json``."""
    if run_dir.is_dir():
        return f"{shown(run_dir)} is not a run folder (no plan.json)"
    siblings = sorted(run_dir.parent.glob(f"{glob.escape(run_dir.name)}-*/plan.json"), key=lambda p: p.stat().st_mtime)
    hint = f": did you mean {shown(siblings[-1].parent)}? (run names its folders NAME-<time>)" if siblings else ""
    return f"no such folder: {shown(run_dir)}{hint}"


def read_plan_json(run_dir: Path) -> dict:
    """The run's ``plan.json`` as JSON data: refused when missing, unreadable, cut short or of another
    version of ditsr-plan."""
    path = run_dir / "plan.json"
    if not path.is_file():
        raise RunFolderError(not_a_run(run_dir))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunFolderError(
            f"{path} is unreadable ({str(exc)[:120]}): cut short or damaged; the run's schedule is lost with it"
        ) from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path} is not a schedule graph (not a JSON object)")
    if data.get("format") != GRAPH_FORMAT:
        raise RunFolderError(
            f"{path} was written by another version of ditsr-plan (schedule graph format {data.get('format')!r}; "
            f"this version reads {GRAPH_FORMAT}): read the run with the version that made it"
        )
    return data


def read_graph(run_dir: Path) -> ScheduleGraph:
    """The run's schedule graph from ``plan.json``; one that does not read back whole, or whose content no
    longer matches its hash (edited by hand), is refused."""
    data = read_plan_json(run_dir)
    try:
        return ScheduleGraph.from_json(data)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        edited = "hash mismatch" in str(exc)
        raise RunFolderError(
            f"{run_dir / 'plan.json'} "
            + (
                f"was edited after the run wrote it ({exc}): the run's schedule is what it trained with; "
                "restore the file, or compile the changed plan with 'ditsr-plan compile'"
                if edited
                else f"is not a whole schedule graph ({type(exc).__name__}: {str(exc)[:120]}): damaged or edited"
            )
        ) from None


def _json_object(path: Path) -> dict | None:
    """A JSON object file, or None when it is missing, unreadable or something else."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class RunStatus:
    finished: bool
    steps_done: int  # finished: the steps trained; else those the newest complete checkpoint holds
    total_steps: int
    stopped_by: dict | None = None

    def describe(self) -> str:
        if self.finished and self.stopped_by:
            watch = self.stopped_by.get("watch")
            return f"stopped after {self.steps_done} of {self.total_steps} steps by 'watch {watch}'"
        if self.finished:
            return f"finished: {self.steps_done} steps"
        return (
            f"unfinished: {self.steps_done} of {self.total_steps} steps in its newest checkpoint "
            "(interrupted, or still running)"
        )


def run_status(run_dir: Path) -> RunStatus:
    """Where the run stands; a damaged ``summary.json`` counts as none (the run reads as unfinished)."""
    total = read_plan_json(run_dir).get("total_steps")
    total = total if isinstance(total, int) else 0
    summary = _json_object(run_dir / "summary.json")
    if summary is not None and isinstance(summary.get("steps"), int):
        stopped = summary.get("stopped_by")
        return RunStatus(True, summary["steps"], total, stopped if isinstance(stopped, dict) else None)
    checkpoints = sorted(
        int(match.group(1))
        for p in (run_dir / "checkpoints").glob("step-*")
        if (match := re.fullmatch(r"step-(\d{8})", p.name)) and p.is_dir() and (p / "manifest.json").is_file()
    )
    return RunStatus(False, checkpoints[-1] if checkpoints else 0, total)
