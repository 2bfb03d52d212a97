"""Canonical formatting of a plan file (``ditsr-plan fmt``).

Keeps what the user wrote -- numbers as spelled, comments, the line breaks between a stage's
term statements, single blank lines -- and normalises the rest: spacing, the order of ramp
options, and the alignment of consecutive ``loss``, settings and ``stage`` lines.
"""

from __future__ import annotations

from ditsr_plan.dsl.syntax import (
    BlockStmt,
    Chunk,
    Comment,
    ExtendsStmt,
    KeepStmt,
    LossStmt,
    PlanFile,
    PlanStmt,
    Setting,
    StageStmt,
    Statement,
    StepsStmt,
    TermStmt,
    WatchStmt,
)

CONTINUATION = "    "


def format_setting(s: Setting) -> str:
    value = s.value
    if not value or any(ch.isspace() or ch in ';#"' for ch in value):
        value = f'"{value}"'
    return f"{s.key.text}={value}"


def format_term(t: TermStmt) -> str:
    if t.op == "off":
        return f"{t.knob.text} off"
    if t.op == "const":
        assert t.value is not None  # the parser builds a constant term only with its value
        return f"{t.knob.text} {t.value.text}"
    assert t.end is not None  # ... and a ramp only with its end
    parts = [f"{t.knob.text} {t.start.text if t.start else ''}->{t.end.text}"]
    if t.shape:
        parts.append(t.shape.text)
    if t.over:
        parts.append(f"over {t.over.text}")
    if t.after:
        parts.append(f"after {t.after.text}")
    return " ".join(parts)


def _group_key(stmt: Statement | None) -> str | None:
    if isinstance(stmt, LossStmt):
        return "loss"
    if isinstance(stmt, BlockStmt):
        return "block"
    if isinstance(stmt, StageStmt) and not stmt.amend:
        return "stage"
    return None


def _stage_header(stmt: StageStmt) -> str:
    if stmt.amend:
        return f"amend stage {stmt.name.text}:"
    end = stmt.end.text if stmt.end else ""
    assert stmt.start is not None  # only an amend has no start
    return f"stage {stmt.name.text} {stmt.start.text}..{end}:"


def _lines(stmt: Statement, widths: dict[str, int]) -> list[tuple[str, int]]:
    """The output lines of a statement, each with the source line it stands for."""
    line = stmt.pos.line
    if isinstance(stmt, PlanStmt):
        return [(f"plan {stmt.name.text}", line)]
    if isinstance(stmt, StepsStmt):
        return [(f"steps {stmt.steps.text}", line)]
    if isinstance(stmt, ExtendsStmt):
        return [(f'extends "{stmt.path}"', line)]
    if isinstance(stmt, WatchStmt):
        text = f"watch {stmt.metric.text} {stmt.op} {stmt.value_text}"
        text += f" for {stmt.evals} evals" if stmt.evals != 1 else ""
        text += f" after {stmt.after.text}" if stmt.after else ""
        return [(f"{text}: {stmt.action}", line)]
    if isinstance(stmt, KeepStmt):
        text = f"keep best {stmt.count} by {stmt.direction} {stmt.metric.text}"
        if stmt.where and stmt.fallback:
            metric, op, _, value = stmt.where
            text += f" where {metric.text} {op} {value} else {stmt.fallback[0]} {stmt.fallback[1].text}"
        return [(text, line)]
    if isinstance(stmt, LossStmt):
        head = f"loss {stmt.name.text.ljust(widths.get('name', 0))} {stmt.kind.text.ljust(widths.get('kind', 0))}"
        return [(" ".join([head, *map(format_setting, stmt.settings)]).rstrip(), line)]
    if isinstance(stmt, BlockStmt):
        parts = [stmt.name.text.ljust(widths.get("block", 0))]
        if stmt.kind:
            parts.append(stmt.kind.text)
        return [(" ".join([*parts, *map(format_setting, stmt.settings)]).rstrip(), line)]
    assert isinstance(stmt, StageStmt)
    groups: list[list[TermStmt]] = []
    for term in stmt.terms:
        if groups and groups[-1][-1].pos.line == term.pos.line:
            groups[-1].append(term)
        else:
            groups.append([term])
    header = _stage_header(stmt).ljust(widths.get("header", 0))
    texts = ["; ".join(map(format_term, g)) for g in groups]
    if not groups:
        return [(header.rstrip(), line)]
    out: list[tuple[str, int]] = []
    if groups[0][0].pos.line == line:
        out.append((f"{header} {texts[0]}", line))
        rest = list(zip(groups[1:], texts[1:], strict=True))
    else:
        out.append((header.rstrip(), line))
        rest = list(zip(groups, texts, strict=True))
    for group, text in rest:
        out.append((CONTINUATION + text, group[0].pos.line))
    return [(text + (";" if i < len(out) - 1 else ""), src) for i, (text, src) in enumerate(out)]


def _widths(run: list[Statement]) -> dict[str, int]:
    losses = [s for s in run if isinstance(s, LossStmt)]
    blocks = [s for s in run if isinstance(s, BlockStmt)]
    stages = [s for s in run if isinstance(s, StageStmt)]
    kind = _group_key(run[0])
    if kind == "loss":
        return {"name": max(len(s.name.text) for s in losses), "kind": max(len(s.kind.text) for s in losses)}
    if kind == "block":
        return {"block": max(len(s.name.text) for s in blocks)}
    if kind == "stage":
        return {"header": max(len(_stage_header(s)) for s in stages)}
    return {}


def _statement(item: Chunk | Comment | None) -> Statement | None:
    return item.statement if isinstance(item, Chunk) else None


def format_plan(plan: PlanFile) -> str:
    """The canonical text of ``plan``; parsing it gives the same spec (and graph hash)."""
    items = list(plan.layout)
    while items and items[0] is None:
        items.pop(0)
    while items and items[-1] is None:
        items.pop()
    # runs of consecutive statements of one kind are aligned together
    widths: dict[int, dict[str, int]] = {}
    i = 0
    while i < len(items):
        item = items[i]
        key = _group_key(item.statement) if isinstance(item, Chunk) else None
        j = i
        while j < len(items) and isinstance(items[j], Chunk) and key and _group_key(_statement(items[j])) == key:
            j += 1
        if key:
            run_widths = _widths([s for k in range(i, j) if (s := _statement(items[k])) is not None])
            for k in range(i, j):
                widths[k] = run_widths
            i = j
        else:
            i += 1
    out: list[str] = []
    for index, item in enumerate(items):
        if item is None:
            if out and out[-1] != "":
                out.append("")
        elif isinstance(item, Comment):
            out.append(item.text)
        else:
            out += _chunk_lines(item, widths.get(index, {}))
    return "\n".join(out) + "\n"


def _chunk_lines(chunk: Chunk, widths: dict[str, int]) -> list[str]:
    assert chunk.statement is not None, "fmt formats only files that parse"
    lines = _lines(chunk.statement, widths)
    notes: dict[int, list[str]] = {}
    for comment in chunk.comments:
        target = max((i for i, (_, src) in enumerate(lines) if src <= comment.line), default=0)
        notes.setdefault(target, []).append(comment.text)
    return [text + ("  " + " ".join(notes[i]) if i in notes else "") for i, (text, _) in enumerate(lines)]
