"""``compile_plan``: plan file -> schedule graph, through the cache when the file is unchanged.

Kept light on purpose: the parser (lark) and the validator (pydantic) are imported only when a
plan really has to be compiled, so that a cached ``lint``/``show`` answers in a few milliseconds.
"""

from __future__ import annotations

import os

from ditsr_plan.diagnostics import PlanError

from . import cache
from .graph import ScheduleGraph


def compile_plan(path: str | os.PathLike, time_scale: float = 1.0, text: str | None = None) -> ScheduleGraph:
    """Load, validate and compile the plan at ``path`` (or ``text`` given for it).

    Raises :class:`PlanError` with every error of the plan: its settings' and its schedule's together.
    """
    path = os.fspath(path)
    if text is None and (graph := cache.load(path, time_scale)) is not None:
        return graph
    from ditsr_plan.dsl.loader import load_spec

    from .build import compile_spec

    spec, errors = load_spec(path, text)
    if spec is None:
        assert errors is not None
        raise errors
    graph = compile_spec(spec, time_scale, errors.diagnostics if errors else ())
    if text is None:
        cache.store(path, time_scale, graph)
    return graph


__all__ = ["PlanError", "compile_plan"]
