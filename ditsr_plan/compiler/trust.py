"""What a plan reaches outside itself: the Python code it would run and the paths it reads (for ``lint``'s
X001 and ``show``). A plan is code, like a Python script: ``model custom factory=MODULE:FUNCTION`` imports
MODULE (its import side effects run) and calls FUNCTION; ``file=PATH.py`` executes that file first."""

from __future__ import annotations

from dataclasses import dataclass

from ditsr_plan.diagnostics import Pos
from ditsr_plan.settings.schemas import BLOCKS, CustomModel, path_fields

from .graph import ScheduleGraph


@dataclass(frozen=True)
class CodeRun:
    """One piece of code the plan runs: what (in words) and where the plan says so."""

    what: str
    pos: Pos | None


def code_run(graph: ScheduleGraph) -> list[CodeRun]:
    """The code a run of ``graph`` would execute besides this tool's own."""
    model = graph.blocks.get("model")
    if model is None or not isinstance(model.settings, CustomModel):
        return []
    factory, file = model.settings.factory, model.settings.file
    module, _, function = str(factory).partition(":")
    where = model.value_origins.get("factory", model.origin)
    if file:
        at_file = model.value_origins.get("file", where)
        return [
            CodeRun(f"model custom file={file} executes that Python file (as module '{module}')", at_file),
            CodeRun(f"model custom factory={factory} calls {function}() of it", where),
        ]
    what = f"model custom factory={factory} imports the Python module '{module}' and calls {function}()"
    return [CodeRun(what, where)]


def resolved_paths(graph: ScheduleGraph) -> list[tuple[str, str]]:
    """``(block.key, path)`` of every file or folder the plan names, as resolved when it was loaded."""
    out = []
    for name, block in graph.blocks.items():
        schema = BLOCKS.get(name, {}).get(block.kind)
        if schema is None:
            continue
        for key in path_fields(schema):
            value = getattr(block.settings, key, None)
            if value and value != schema.model_fields[key].default:
                out.append((f"{name}.{key}", str(value)))
    return out
