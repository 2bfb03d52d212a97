"""Semantic diff of two compiled plans: what changes in training, term by term, step by step.

Only meaning is compared (the graph), never text: formatting, comments, declaration order and
plan names do not show. For every knob the diff gives the maximal step ranges where the two
plans' values differ, and what each plan does there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from ditsr_plan.settings.numbers import format_steps

from .graph import Knob, Piece, ScheduleGraph
from .show import describe_range, stage_label

EPS = 1e-12
SAMPLES = 4


@dataclass
class RangeChange:
    start: int
    end: int
    a: str
    b: str


@dataclass
class PlanDiff:
    a: ScheduleGraph
    b: ScheduleGraph
    steps: tuple[int, int] | None = None
    stages: tuple[list[str], list[str]] | None = None
    added: list[str] = field(default_factory=list)  # term names only in b
    removed: list[str] = field(default_factory=list)  # term names only in a
    changed_settings: dict[str, dict[str, tuple[Any, Any]]] = field(default_factory=dict)  # term -> key -> (a, b)
    knobs: dict[str, list[RangeChange]] = field(default_factory=dict)
    blocks: dict[str, dict[str, tuple[Any, Any]]] = field(default_factory=dict)  # block -> key -> (a, b)

    @property
    def same(self) -> bool:
        return self.a.hash == self.b.hash


def _absent(total: int, end: int) -> Knob:
    return Knob("", "absent", (Piece(0, max(total, end, 1), 0.0, 0.0),))


def _same_on(ka: Knob, kb: Knob, lo: int, hi: int) -> bool:
    points = {lo, hi - 1, *(lo + (hi - 1 - lo) * i // SAMPLES for i in range(1, SAMPLES))}
    return all(abs(ka.at(s) - kb.at(s)) <= EPS for s in points)


def knob_changes(ka: Knob, kb: Knob, total: int) -> list[RangeChange]:
    cuts = sorted({0, total, *(c for k in (ka, kb) for p in k.pieces for c in (p.start, p.end) if c < total)})
    spans: list[list[int]] = []
    for lo, hi in pairwise(cuts):
        if _same_on(ka, kb, lo, hi):
            continue
        if spans and spans[-1][1] == lo:
            spans[-1][1] = hi
        else:
            spans.append([lo, hi])
    return [RangeChange(lo, hi, describe_range(ka, lo, hi), describe_range(kb, lo, hi)) for lo, hi in spans]


def _dict_changes(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (a.get(k), b.get(k)) for k in {**a, **b} if a.get(k) != b.get(k)}


def diff_graphs(a: ScheduleGraph, b: ScheduleGraph) -> PlanDiff:
    d = PlanDiff(a, b)
    if a.total_steps != b.total_steps:
        d.steps = (a.total_steps, b.total_steps)
    sa, sb = [stage_label(s) for s in a.stages], [stage_label(s) for s in b.stages]
    if sa != sb:
        d.stages = (sa, sb)
    d.removed = [n for n in a.terms if n not in b.terms]
    d.added = [n for n in b.terms if n not in a.terms]
    for name in a.terms:
        if name in b.terms:
            ta, tb = a.terms[name], b.terms[name]
            changes = _dict_changes({"kind": ta.kind, **ta.all_values}, {"kind": tb.kind, **tb.all_values})
            if changes:
                d.changed_settings[name] = changes
    total = max(a.total_steps, b.total_steps)
    for name in [*a.knobs, *(n for n in b.knobs if n not in a.knobs)]:
        ka, kb = a.knobs.get(name), b.knobs.get(name)
        if (ka is None or kb is None) and name not in a.terms and name not in b.terms:
            continue  # lr_d comes and goes with its GAN term, which the diff reports
        ka = ka if a.total_steps == total and ka else _extend(ka, a.total_steps, total)
        kb = kb if b.total_steps == total and kb else _extend(kb, b.total_steps, total)
        knob = knob_changes(ka, kb, total)
        if knob:
            d.knobs[name] = knob
    for name in sorted({*a.blocks, *b.blocks}):
        va = {"kind": a.blocks[name].kind, **a.blocks[name].all_values} if name in a.blocks else {}
        vb = {"kind": b.blocks[name].kind, **b.blocks[name].all_values} if name in b.blocks else {}
        changes = _dict_changes(va, vb)
        if changes:
            d.blocks[name] = changes
    return d


def _extend(knob: Knob | None, own_total: int, total: int) -> Knob:
    """A knob over ``total`` steps: absent knobs are 0; a shorter plan is 0 after its end."""
    if knob is None:
        return _absent(total, own_total)
    if own_total >= total:
        return knob
    return Knob(knob.name, knob.kind, (*knob.pieces, Piece(own_total, total, 0.0, 0.0)))


def _fmt(value: object) -> str:
    if isinstance(value, list | tuple):
        return ",".join(_fmt(v) for v in value)
    return "(none)" if value is None else str(value)


def _source(path: str, label: str | None) -> str:
    return path if label is None or label == path else f"{label} (compiled from {path})"


def render_text(d: PlanDiff, labels: tuple[str, str] | None = None) -> str:
    """The diff as text; ``labels``: what the user named (a run folder, a graph JSON), shown beside the plans."""
    a, b = d.a, d.b
    out = [
        f"--- {_source(a.path, labels[0] if labels else None)}  ({a.name}, {format_steps(a.total_steps)} steps, "
        f"hash {a.hash})",
        f"+++ {_source(b.path, labels[1] if labels else None)}  ({b.name}, {format_steps(b.total_steps)} steps, "
        f"hash {b.hash})",
    ]
    if d.same:
        out.append("no difference in meaning: the plans compile to the same graph")
        return "\n".join(out)
    if d.steps:
        out.append(f"~ steps: {format_steps(d.steps[0])} -> {format_steps(d.steps[1])}")
    if d.stages:
        out.append(f"~ stages: {', '.join(d.stages[0])}")
        out.append(f"       -> {', '.join(d.stages[1])}")

    def weights(name: str) -> list[str]:
        lines = []
        for ch in d.knobs.get(name, []):
            lines.append(f"    steps {format_steps(ch.start)}..{format_steps(ch.end)}:")
            lines.append(f"      {a.name}: {'(not declared)' if name in d.added else ch.a}")
            lines.append(f"      {b.name}: {'(not declared)' if name in d.removed else ch.b}")
        return lines

    def settings(values: dict[str, Any]) -> str:
        return " ".join(f"{k}={_fmt(v)}" for k, v in values.items())

    for name in d.removed:
        out.append(f"- term {name} ({a.terms[name].kind}): {settings(a.terms[name].all_values)}")
        out += weights(name)
    for name in d.added:
        out.append(f"+ term {name} ({b.terms[name].kind}): {settings(b.terms[name].all_values)}")
        out += weights(name)
    for name in [*a.knobs, *(n for n in b.knobs if n not in a.knobs)]:
        if name in d.removed or name in d.added or (name not in d.knobs and name not in d.changed_settings):
            continue
        kind = a.terms.get(name) or b.terms.get(name)
        out.append(f"~ {'term ' if kind else ''}{name}{f' ({kind.kind})' if kind else ''}")
        for key, (va, vb) in d.changed_settings.get(name, {}).items():
            out.append(f"    {key}: {_fmt(va)} -> {_fmt(vb)}")
        out += weights(name)
    for name, changes in d.blocks.items():
        if name not in a.blocks:
            out.append(f"+ {name}: " + " ".join(f"{k}={_fmt(vb)}" for k, (_, vb) in changes.items() if vb is not None))
        elif name not in b.blocks:
            out.append(f"- {name}: " + " ".join(f"{k}={_fmt(va)}" for k, (va, _) in changes.items() if va is not None))
        else:
            out.append(f"~ {name}: " + ", ".join(f"{k} {_fmt(va)} -> {_fmt(vb)}" for k, (va, vb) in changes.items()))
    return "\n".join(out)


def to_json(d: PlanDiff) -> dict[str, Any]:
    def side(g: ScheduleGraph) -> dict[str, Any]:
        return {"path": g.path, "plan": g.name, "hash": g.hash, "steps": g.total_steps}

    return {
        "a": side(d.a),
        "b": side(d.b),
        "same": d.same,
        "steps": list(d.steps) if d.steps else None,
        "stages": {"a": d.stages[0], "b": d.stages[1]} if d.stages else None,
        "terms": {
            "added": {n: {"kind": d.b.terms[n].kind, "settings": d.b.terms[n].all_values} for n in d.added},
            "removed": {n: {"kind": d.a.terms[n].kind, "settings": d.a.terms[n].all_values} for n in d.removed},
            "changed": {n: {k: list(v) for k, v in ch.items()} for n, ch in d.changed_settings.items()},
        },
        "knobs": {n: [{"start": c.start, "end": c.end, "a": c.a, "b": c.b} for c in ch] for n, ch in d.knobs.items()},
        "blocks": {n: {k: list(v) for k, v in ch.items()} for n, ch in d.blocks.items()},
    }
