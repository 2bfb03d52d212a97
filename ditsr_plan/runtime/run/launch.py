"""From a plan file and the command line's settings to a run: the folder, and on ``--resume`` the run's
own time scale and ``--set`` overrides (``run.json``) unless new ones are given."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ditsr_plan.compiler import compile_plan
from ditsr_plan.compiler.graph import ScheduleGraph

from .folder import default_run_dir
from .invocation import Invocation
from .loop import RunResult, run_plan


def launch(
    plan: str,
    out: str | None = None,
    time_scale: float | None = None,
    overrides: Sequence[str] | None = None,
    resume: bool = False,
    force: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    graph: ScheduleGraph | None = None,
) -> RunResult:
    """``ditsr-plan run``. ``time_scale``/``overrides`` None: 1 and none -- or, resuming, the run's own.
    ``graph``: the plan already compiled with them (the command line checks it before importing torch)."""
    given = Invocation(plan, time_scale or 1.0, tuple(overrides or ()))
    if graph is None:
        graph = compile_plan(plan, given.time_scale, overrides=given.overrides)
    run_dir = Path(out) if out else default_run_dir(graph.name, graph.block("run").out, resume)
    invocation = given
    stored = Invocation.load(run_dir) if resume else None
    if stored is not None:
        invocation = Invocation(
            plan,
            stored.time_scale if time_scale is None else time_scale,
            stored.overrides if overrides is None else tuple(overrides),
        )
        if invocation != given:
            graph = compile_plan(plan, invocation.time_scale, overrides=invocation.overrides)
    return run_plan(graph, run_dir, resume=resume, force=force, overwrite=overwrite, invocation=invocation, quiet=quiet)
