"""What a lint rule is, and the helpers rules share to ask questions of a schedule graph."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

from ditsr_plan.diagnostics import Diagnostic, Pos
from ditsr_plan.settings.numbers import format_steps

from ..graph import Knob, ScheduleGraph, Term, merge_ranges

Ranges = tuple[tuple[int, int], ...]


def intersect(a: Ranges, b: Ranges) -> Ranges:
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo < hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def subtract(a: Ranges, b: Ranges) -> Ranges:
    out = []
    for lo, hi in a:
        for blo, bhi in b:
            if bhi <= lo or blo >= hi:
                continue
            if blo > lo:
                out.append((lo, blo))
            lo = max(lo, bhi)
            if lo >= hi:
                break
        if lo < hi:
            out.append((lo, hi))
    return tuple(out)


@dataclass
class Context:
    """A graph under lint, with the parameters in force for the current rule."""

    graph: ScheduleGraph
    params: dict[str, dict[str, float]] = field(default_factory=dict)
    unused_noqa: list[tuple[Pos, tuple[str, ...]]] = field(default_factory=list)

    def steps(self, n: int) -> int:
        """A step threshold from the notes, scaled like the plan (``--time-scale``)."""
        return max(1, round(n * self.graph.time_scale))

    def terms(self, *kinds: str) -> list[Term]:
        return [t for t in self.graph.terms.values() if t.kind in kinds]

    def knob(self, term: Term) -> Knob:
        return self.graph.knobs[term.name]

    def live(self, *kinds: str) -> Ranges:
        return merge_ranges([r for t in self.terms(*kinds) for r in self.knob(t).live])

    def origin(self, term: Term, step: int) -> Pos | None:
        """Where the statement that sets ``term`` at ``step`` was written."""
        return self.knob(term).piece_at(step).origin or term.origin

    def peak_origin(self, term: Term) -> Pos | None:
        knob = self.knob(term)
        first = next(p for p in knob.pieces if p.peak == knob.peak)
        return first.origin or term.origin


class Rule:
    """Base of every lint rule. Subclasses set ``code``, ``name``, ``params`` and a docstring
    in the fixed form (what it catches; Why; Example; Fix)."""

    code: ClassVar[str]
    name: ClassVar[str]
    params: ClassVar[dict[str, float]] = {}

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.graph = ctx.graph
        self.p = {**self.params, **ctx.params.get(self.code, {})}

    def check(self) -> Iterable[Diagnostic]:
        raise NotImplementedError

    def finding(self, message: str, pos: Pos | None, hint: str | None = None) -> Diagnostic:
        return Diagnostic(self.code, message, pos or Pos(self.graph.path, 1, 1), hint, severity="warning")

    @classmethod
    def summary(cls) -> str:
        return cls.docs().splitlines()[0]

    @classmethod
    def docs(cls) -> str:
        import inspect

        return inspect.cleandoc(cls.__doc__ or "")


def step(n: int) -> str:
    return format_steps(n)
