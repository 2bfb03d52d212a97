"""Human and JSON views of a schedule graph: the stage x knob table, and the values at one step."""

from __future__ import annotations

from typing import Any

from ditsr_plan.settings.numbers import format_steps, format_value

from .graph import Knob, Piece, ScheduleGraph, Stage
from .trust import code_run, resolved_paths


def rounded(x: float) -> float:
    """A weight for output: exact values stay exact, float noise (0.30000000000000004) goes."""
    return round(x, 12)


def describe_piece(piece: Piece, whole: bool = False) -> str:
    """``0.35``, ``0->0.35 linear``, with ``(a..b)`` unless the piece covers the whole range shown."""
    span = "" if whole else f" ({format_steps(piece.start)}..{format_steps(piece.end)})"
    if piece.shape == "const":
        return format_value(rounded(piece.v0)) + span
    return f"{format_value(rounded(piece.v0))}->{format_value(rounded(piece.v1))} {piece.shape}{span}"


def describe_range(knob: Knob, start: int, end: int) -> str:
    """The knob on ``[start, end)`` as a short phrase: ``0.35->0.45 linear (9k..13k), 0.45 (13k..15k)``."""
    parts = []
    for piece in knob.pieces:
        a, b = max(piece.start, start), min(piece.end, end)
        if a >= b:
            continue
        v1 = piece.v1 if b == piece.end else piece.at(b)
        parts.append(describe_piece(Piece(a, b, piece.at(a), v1, piece.shape), whole=(a, b) == (start, end)))
    return ", ".join(parts) if parts else "-"


def stage_label(stage: Stage) -> str:
    return f"{stage.name} ({format_steps(stage.start)}..{format_steps(stage.end)})"


def header(graph: ScheduleGraph) -> str:
    scale = f" · time scale {graph.time_scale:g}" if graph.time_scale != 1 else ""
    return f"plan {graph.name} · {format_steps(graph.total_steps)} steps · hash {graph.hash}{scale} · {graph.path}"


def table_text(graph: ScheduleGraph) -> str:
    """Rows are knobs, columns are stages; each cell says what the knob does in that stage."""
    rows = [["stage", *(stage_label(s) for s in graph.stages)]]
    for name, knob in graph.knobs.items():
        rows.append([name, *(describe_range(knob, s.start, s.end) for s in graph.stages)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    terms = "terms: " + ", ".join(f"{t.name} ({t.kind}{', pixel' if t.pixel else ''})" for t in graph.terms.values())
    return "\n".join([header(graph), "", *lines, "", terms, "", *blocks_text(graph), *reach_text(graph)])


def reach_text(graph: ScheduleGraph) -> list[str]:
    """The paths the plan names, resolved, and the code it would run (nothing when it names neither)."""
    lines = []
    paths = resolved_paths(graph)
    if paths:
        width = max(len(k) for k, _ in paths)
        lines += ["", "paths (a relative one is resolved against the folder of the plan file that writes it):"]
        lines += [f"  {key.ljust(width)}  {path}" for key, path in paths]
    runs = code_run(graph)
    if runs:
        lines += ["", "code (a plan can run code, like a Python script):"]
        lines += [f"  {run.pos.file}:{run.pos.line}: {run.what}" if run.pos else f"  {run.what}" for run in runs]
    return lines


def _value_text(value: object) -> str:
    if isinstance(value, list | tuple):
        return ",".join(format_value(v) if isinstance(v, float) else str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format_value(value)
    return "-" if value is None else str(value)


def blocks_json(graph: ScheduleGraph) -> dict[str, Any]:
    """Every settings block as the run will use it: its kind, every value, and which were defaults."""
    return {
        name: {
            "kind": block.kind,
            "values": values,
            "defaults": sorted(k for k in values if k not in block.value_origins),
        }
        for name, block in graph.blocks.items()
        for values in [block.all_values]
    }


def blocks_text(graph: ScheduleGraph) -> list[str]:
    """``model  dit: patch=1 ... preset=tiny* ...`` per block: the values the plan writes, then the defaults,
    marked ``*``."""
    width = max(len(n) for n in graph.blocks)
    lines = ["settings (* = default, not written in the plan):"]
    for name, block in graph.blocks.items():
        values = block.all_values
        given = [(k, v, "") for k, v in values.items() if k in block.value_origins]
        defaults = [(k, v, "*") for k, v in values.items() if k not in block.value_origins]
        text = " ".join(f"{k}={_value_text(v)}{mark}" for k, v, mark in given + defaults)
        kind = f"{block.kind}: " if block.kind else ""
        lines.append(f"  {name.ljust(width)}  {kind}{text}".rstrip())
    return lines


def table_json(graph: ScheduleGraph) -> dict[str, Any]:
    return {
        "plan": graph.name,
        "hash": graph.hash,
        "steps": graph.total_steps,
        "time_scale": graph.time_scale,
        "stages": [
            {
                "name": s.name,
                "start": s.start,
                "end": s.end,
                "knobs": {n: describe_range(k, s.start, s.end) for n, k in graph.knobs.items()},
            }
            for s in graph.stages
        ],
        "terms": {n: {"kind": t.kind, "pixel": t.pixel, "settings": t.all_values} for n, t in graph.terms.items()},
        "blocks": blocks_json(graph),
        "paths": dict(resolved_paths(graph)),
        "code": [run.what for run in code_run(graph)],
    }


def at_json(graph: ScheduleGraph, step: int) -> dict[str, Any]:
    weights = graph.weights_at(step)
    needs = graph.needs_at(step)
    return {
        "step": step,
        "stage": graph.stage_at(step).name,
        "weights": {n: rounded(weights[n]) for n in graph.terms},
        "lr": {n: rounded(weights[n]) for n in graph.knobs if n not in graph.terms},
        "live": graph.live_terms(step),
        "needs": {"pixel": needs.pixel, "discriminator": needs.discriminator},
    }


def at_text(graph: ScheduleGraph, step: int) -> str:
    data = at_json(graph, step)
    stage = graph.stage_at(step)
    lines = [header(graph), "", f"step {step} · stage {stage_label(stage)}"]
    width = max(len(n) for n in graph.knobs)
    values = {name: format_value(value) for name, value in {**data["weights"], **data["lr"]}.items()}
    value_width = max(len(v) for v in values.values())
    for name, value in values.items():
        mark = "live" if name in data["live"] else ""
        lines.append(f"  {name.ljust(width)}  {value.ljust(value_width)}  {mark}".rstrip())
    needs = data["needs"]
    lines.append(
        f"needs: pixel patch {'yes' if needs['pixel'] else 'no'}, "
        f"discriminator {'yes' if needs['discriminator'] else 'no'}"
    )
    return "\n".join(lines)
