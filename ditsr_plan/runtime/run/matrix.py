"""``ditsr-plan matrix PLAN...``: run several plans one after another into sibling run folders.

Each plan runs in ``OUT/<plan name>`` (``OUT`` defaults to ``runs/matrix``). Running the matrix again
skips the runs that finished (with the same plan hash) and resumes the unfinished one from its newest
checkpoint; a finished run of a changed plan is refused unless ``--overwrite``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ditsr_plan.compiler.graph import ScheduleGraph

from ...terminal import shown
from .folder import RunError
from .invocation import Invocation
from .loop import run_plan


def _finished(summary: Path) -> dict:
    try:
        done = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        done = exc
    if not isinstance(done, dict):
        raise RunError(
            f"matrix: {shown(summary)} is damaged (not the JSON object a finished run writes): remove it to "
            "resume that run, or use --overwrite to run it again"
        )
    return done


def run_matrix(
    graphs: list[ScheduleGraph], out: Path, overwrite: bool = False, overrides: tuple[str, ...] = (), quiet=False
) -> list[Path]:
    names = [g.name for g in graphs]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise RunError(
            f"matrix: several plans are named {', '.join(sorted(duplicates))}; give each its own 'plan NAME'"
        )
    folders = []
    for i, graph in enumerate(graphs, start=1):
        folder = out / graph.name
        folders.append(folder)
        summary = folder / "summary.json"
        print(f"[matrix {i}/{len(graphs)}] {graph.name} -> {folder}", file=sys.stderr, flush=True)
        if summary.is_file() and not overwrite:
            done = _finished(summary)
            if done.get("hash") == graph.hash:
                print(f"[matrix] {graph.name}: finished before, skipped", file=sys.stderr)
                continue
            raise RunError(
                f"matrix: {folder} holds a finished run of another version of plan {graph.name} "
                f"(hash {done.get('hash')}, now {graph.hash}); use --overwrite to run it again"
            )
        resume = (folder / "plan.json").is_file() and not overwrite
        invocation = Invocation(graph.path, graph.time_scale, tuple(overrides))
        run_plan(graph, folder, resume=resume, force=False, overwrite=overwrite, invocation=invocation, quiet=quiet)
    return folders
