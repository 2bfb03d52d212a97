"""Spec -> schedule graph; lint, diff and show read the graph. Imports no torch."""

from ditsr_plan.compiler.compile import compile_plan, compile_spec
from ditsr_plan.compiler.graph import Knob, Needs, Piece, ScheduleGraph, Stage, Term

__all__ = ["Knob", "Needs", "Piece", "ScheduleGraph", "Stage", "Term", "compile_plan", "compile_spec"]
