"""Spec -> schedule graph; lint, diff and show read the graph. Imports no torch.

``compile_plan`` is the entry point; ``build.compile_spec`` is the compiler proper.
"""

from ditsr_plan.compiler.compile import compile_plan, load_graph
from ditsr_plan.compiler.graph import Block, Knob, Needs, Piece, ScheduleGraph, Stage, Term

__all__ = ["Block", "Knob", "Needs", "Piece", "ScheduleGraph", "Stage", "Term", "compile_plan", "load_graph"]
