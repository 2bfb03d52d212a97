"""``compile_plan``: plan file -> schedule graph, through the cache when the file is unchanged.

Kept light on purpose: the parser (lark) and the validator (pydantic) are imported only when a
plan really has to be compiled, so that a cached ``lint``/``show`` answers in a few milliseconds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from . import cache
from .graph import ScheduleGraph


def compile_plan(
    path: str | os.PathLike, time_scale: float = 1.0, text: str | None = None, overrides: Sequence[str] = ()
) -> ScheduleGraph:
    """Load, validate and compile the plan at ``path`` (or ``text`` given for it), with ``--set``
    ``overrides`` (``NAME.KEY=VALUE``) applied.

    Raises :class:`PlanError` with every error of the plan: its settings' and its schedule's together.
    """
    path = os.fspath(path)
    cacheable = text is None and not overrides
    if cacheable and (graph := cache.load(path, time_scale)) is not None:
        return graph
    from ditsr_plan.dsl.loader import load_spec

    from .build import compile_spec

    spec, errors = load_spec(path, text, overrides)
    if spec is None:
        assert errors is not None
        raise errors
    graph = compile_spec(spec, time_scale, errors.diagnostics if errors else ())
    if cacheable:
        cache.store(path, time_scale, graph)
    return graph
