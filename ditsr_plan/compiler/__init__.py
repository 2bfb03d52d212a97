"""Spec -> schedule graph; lint, diff and show read the graph. Imports no torch.

``compile_plan`` is the entry point; ``build.compile_spec`` is the compiler proper. The names below are
imported on first use (PEP 562), so that importing a light module of the compiler (``cache``, ``lint``)
does not import the graph, the setting schemas and pydantic: a cached ``lint`` needs none of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ditsr_plan.compiler.compile import compile_plan, load_graph
    from ditsr_plan.compiler.graph import Block, Knob, Needs, Piece, ScheduleGraph, Stage, Term

__all__ = ["Block", "Knob", "Needs", "Piece", "ScheduleGraph", "Stage", "Term", "compile_plan", "load_graph"]
_HOME = {"compile_plan": "compile", "load_graph": "compile"}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME.get(name, 'graph')}"), name)
