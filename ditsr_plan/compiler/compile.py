"""``compile_plan``: plan file -> schedule graph, through the cache when the file is unchanged.

Kept light on purpose: the parser (lark) and the validator (pydantic) are imported only when a
plan really has to be compiled, so that a cached ``lint``/``show`` answers in a few milliseconds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import ditsr_plan.compiler.cache as cache

if TYPE_CHECKING:
    from .graph import ScheduleGraph


def compile_plan(
    path: str | os.PathLike[str], time_scale: float = 1.0, text: str | None = None, overrides: Sequence[str] = ()
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


def load_graph(path: str | os.PathLike[str], time_scale: float = 1.0) -> ScheduleGraph:
    """A schedule graph from a plan file, a compiled graph (``ditsr-plan compile -o G.json``) or a run folder
    (its ``plan.json``), for the commands that read graphs (``show``, ``diff``). A compiled graph keeps the
    time scale it was compiled with: asking for another is an error."""
    import json
    from pathlib import Path

    from ditsr_plan.diagnostics import FILE, Diagnostic, PlanError

    from .graph import ScheduleGraph

    source = Path(path)
    if source.is_dir():
        if not (source / "plan.json").is_file():
            raise PlanError(
                [Diagnostic(FILE, f"'{path}' is a folder, but not a run folder (no plan.json in it)", None)]
            )
        source = source / "plan.json"
    elif source.suffix.lower() != ".json":
        return compile_plan(path, time_scale)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
        graph = ScheduleGraph.from_json(data)
    except FileNotFoundError:
        raise PlanError([Diagnostic(FILE, f"no such file: '{source}'", None)]) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise PlanError([Diagnostic(FILE, f"'{source}' is not a compiled schedule graph ({exc})", None)]) from None
    if time_scale != 1 and time_scale != graph.time_scale:
        raise PlanError(
            [
                Diagnostic(
                    FILE,
                    f"'{source}' was compiled at time scale {graph.time_scale:g}; a compiled graph cannot be "
                    f"rescaled to {time_scale:g} (compile the plan again with --time-scale)",
                    None,
                )
            ]
        )
    return graph
