"""Lint: rules that catch the schedule mistakes of the loss notes, on a compiled graph.

``lint_paths`` compiles each plan, runs the selected rules, applies ``# noqa`` comments and
reports compile errors as findings too (they cannot be suppressed or deselected). The findings of an
unchanged plan are read back from the compile cache: the rules, the graph and the parser are imported
only when a plan has to be linted again.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import ditsr_plan.compiler.cache as cache
from ditsr_plan.diagnostics import SET_FILE, Diagnostic, Note, PlanError, Pos
from ditsr_plan.dsl.comments import split_comment

from ..compile import compile_plan
from .codes import RULE_NAMES

if TYPE_CHECKING:
    from ..graph import ScheduleGraph
    from .rule import Rule

NOQA = re.compile(r"#\s*noqa(?::\s*(?P<codes>[A-Z]+[0-9]+(?:[\s,]+[A-Z]+[0-9]+)*))?", re.IGNORECASE)


@dataclass
class LintResult:
    findings: list[Diagnostic] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def selected_rules(select: Sequence[str] | None, ignore: Sequence[str] | None) -> list[type[Rule]]:
    """Rules whose code starts with one of ``select`` (all by default) and none of ``ignore``."""

    from .rules import RULES

    def matches(code: str, prefixes: Sequence[str]) -> bool:
        return any(code.startswith(p.strip().upper()) for p in prefixes if p.strip())

    return [r for r in RULES if (not select or matches(r.code, select)) and not matches(r.code, ignore or ())]


def unknown_codes(codes: Iterable[str]) -> list[str]:
    return [c for c in codes if c.strip() and not any(code.startswith(c.strip().upper()) for code in RULE_NAMES)]


def _noqa_comments(path: str, text: str) -> dict[int, tuple[Pos, tuple[str, ...]]]:
    out = {}
    for n, line in enumerate(text.splitlines(), start=1):
        _, comment = split_comment(line)
        if comment and (m := NOQA.search(comment)):
            codes = tuple(c.upper() for c in re.split(r"[\s,]+", m["codes"]) if c) if m["codes"] else ()
            col = len(line) - len(comment) + m.start() + 1
            out[n] = (Pos(path, n, col, m.end() - m.start()), codes)
    return out


def lint_graph(
    graph: ScheduleGraph, rules: Sequence[type[Rule]], params: dict[str, dict[str, float]] | None = None
) -> list[Diagnostic]:
    """Run ``rules`` on ``graph``; apply ``# noqa``; report unused ones under N001 when selected."""
    from .rule import Context
    from .rules import BY_CODE

    ctx = Context(graph, params or {})
    raw: list[Diagnostic] = []
    for rule in rules:
        if rule.code != "N001":
            raw += rule(ctx).check()
    noqa = {path: _noqa_comments(path, text) for path, text in graph.sources.items()}
    used: dict[tuple[str, int], set[str]] = {}
    findings = []
    for f in raw:
        assert f.pos is not None  # Rule.finding places every finding (at line 1 of the plan at least)
        pos, codes = noqa.get(f.pos.file, {}).get(f.pos.line, (None, None))
        if pos is not None and (not codes or f.code in codes):
            used.setdefault((f.pos.file, f.pos.line), set()).add(f.code)
            continue
        findings.append(f)
    selected = {r.code for r in rules}
    if "N001" in selected:
        for line, (pos, codes) in noqa.get(graph.path, {}).items():
            hit = used.get((graph.path, line), set())
            if not codes and not hit:
                ctx.unused_noqa.append((pos, ()))
            elif codes:
                stale = tuple(c for c in codes if c in selected and c not in hit)
                if stale:
                    ctx.unused_noqa.append((pos, stale))
        findings += BY_CODE["N001"](ctx).check()
    return sorted(findings, key=_order)


def _order(f: Diagnostic) -> tuple[str, int, int, str]:
    return (f.pos.file, f.pos.line, f.pos.col, f.code) if f.pos else ("", 0, 0, f.code)


class NoPlansError(ValueError):
    """A folder named on the command line holds no plan file."""


def plan_files(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """The plan files named, with directories expanded to every ``*.plan`` file below them (a folder that
    happens to be called ``x.plan`` is a folder). A named folder without any plan file is an error."""
    out: list[str] = []
    for p in paths:
        path = Path(p)
        if str(p) == "<stdin>":
            out.append(str(p))
        elif path.is_dir():
            found = sorted(str(f) for f in path.rglob("*.plan") if f.is_file())
            if not found:
                raise NoPlansError(f"{p} is a folder with no *.plan file in it")
            out += found
        else:
            out.append(str(path))
    return out


def _lint_plan(
    path: str,
    text: str | None,
    rules: Sequence[type[Rule]],
    params: dict[str, dict[str, float]] | None,
    time_scale: float,
    overrides: Sequence[str] = (),
) -> tuple[list[Diagnostic], dict[str, str]]:
    """The findings of one plan (its compile errors, when it has any) and the texts of its files."""
    try:
        graph = compile_plan(path, time_scale, text=text, overrides=overrides)
    except PlanError as exc:
        return exc.diagnostics, exc.sources
    return lint_graph(graph, rules, params), dict(graph.sources)


def lint_paths(
    paths: Iterable[str | os.PathLike[str]],
    select: Sequence[str] | None = None,
    ignore: Sequence[str] | None = None,
    params: dict[str, dict[str, float]] | None = None,
    time_scale: float = 1.0,
    texts: dict[str, str] | None = None,
    overrides: Sequence[str] = (),
) -> LintResult:
    """Lint every plan of ``paths``. A finding in a parent file is reported once, at that file: when the
    parent is linted too, as its own; otherwise with a note naming the child that found it. ``texts`` gives
    the text of a plan that is not a file (``-``: standard input, named ``<stdin>``); ``overrides`` are
    ``--set`` items applied to every plan (a finding they cause is reported at the ``--set``)."""
    result = LintResult()
    choice = cache.lint_key(select, ignore, params or {})
    rules: list[type[Rule]] = []  # chosen when a plan is linted, not read back
    seen: dict[tuple[str, Pos | None, str], int] = {}  # a finding's identity -> its index in result.findings
    for path in plan_files(paths):
        result.files.append(path)
        text = (texts or {}).get(path)
        # a cached entry is for the plan as written: --set items are applied (and linted) afresh
        cached = cache.load_findings(path, time_scale, choice) if text is None and not overrides else None
        if cached is not None:
            found, sources = cached
        else:
            rules = rules or selected_rules(select, ignore)
            found, sources = _lint_plan(path, text, rules, params, time_scale, overrides)
            if text is None and not overrides:
                cache.store_findings(path, time_scale, choice, found, sources)
        result.sources.update(sources)
        for f in found:
            key = (f.code, f.pos, f.message)
            own = f.pos is None or f.pos.file in (path, SET_FILE)
            if key in seen:
                if own:  # the parent's own lint replaces what a child found in it
                    result.findings[seen[key]] = f
                continue
            if not own:  # a finding in a parent file, caused or kept by this plan
                f = replace(f, notes=(*f.notes, Note(f"found while linting {path}, which extends this file")))
            seen[key] = len(result.findings)
            result.findings.append(f)
    return result
