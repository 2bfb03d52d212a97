"""Positions, diagnostics and the one exception a plan can raise.

Every error a user can cause is a :class:`Diagnostic` with a source position; a
:class:`PlanError` carries all diagnostics of a compilation so that they are reported together.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .terminal import same_width, shown

SET_FILE = "--set"  # the pseudo-file that --set overrides are positioned in (``--set:1:5``)


@dataclass(frozen=True, order=True)
class Pos:
    """A place in a plan file: 1-based line and column, and how many characters it spans."""

    file: str
    line: int
    col: int
    length: int = field(default=1, compare=False)

    def __str__(self) -> str:
        return f"{shown(self.file)}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Note:
    message: str
    pos: Pos | None = None


@dataclass(frozen=True)
class Diagnostic:
    """One finding about a plan: an error of the language or a lint finding."""

    code: str
    message: str
    pos: Pos | None
    hint: str | None = None
    notes: tuple[Note, ...] = ()
    severity: str = "error"

    def headline(self) -> str:
        """``file:line:col: error: message`` for errors, ``file:line:col: G001 message`` for findings."""
        where = f"{self.pos}: " if self.pos else ""
        label = "error:" if self.severity == "error" else self.code
        return f"{where}{label} {shown(self.message)}"


# Error codes of the language (lint rules have their own codes, see compiler/lint).
SYNTAX = "E001"  # the text does not parse
NAME = "E002"  # an unknown or duplicated name: term, key, block, stage
VALUE = "E003"  # a value of the wrong type or out of range
SCHEDULE = "E004"  # stages that overlap or leave gaps, ramps past their stage
EXTENDS = "E005"  # a missing parent file or an extends cycle
FILE = "E006"  # a plan file that cannot be read


class PlanError(Exception):
    """The only exception the dsl and the compiler raise for bad input."""

    def __init__(self, diagnostics: Iterable[Diagnostic], sources: Mapping[str, str] | None = None):
        self.diagnostics = sorted(diagnostics, key=_sort_key)
        self.sources = dict(sources or {})
        super().__init__("\n".join(d.headline() for d in self.diagnostics))

    def render(self, color: bool = False) -> str:
        return render_all(self.diagnostics, self.sources, color)

    @classmethod
    def merge(cls, errors: Iterable[PlanError]) -> PlanError:
        """One error holding the diagnostics and sources of several (e.g. of every plan of a command)."""
        errors = list(errors)
        diagnostics: list[Diagnostic] = []
        for d in (d for e in errors for d in e.diagnostics):
            if d not in diagnostics:  # the same mistake found in two plans (a --set both share) is one mistake
                diagnostics.append(d)
        return cls(diagnostics, {k: v for e in errors for k, v in e.sources.items()})


def _sort_key(d: Diagnostic) -> tuple:
    return (d.pos.file, d.pos.line, d.pos.col) if d.pos else ("", 0, 0)


STYLES = {"error": "1;31", "code": "1;33", "caret": "31", "note": "34", "hint": "36", "where": "1"}


def _paint(text: str, style: str, color: bool) -> str:
    return f"\033[{STYLES[style]}m{text}\033[0m" if color else text


def _excerpt(pos: Pos, sources: Mapping[str, str], color: bool = False) -> list[str]:
    text = sources.get(pos.file)
    if text is None:
        return []
    lines = text.splitlines()
    if not 1 <= pos.line <= len(lines):
        return []
    src = same_width(lines[pos.line - 1].expandtabs(1))
    gutter = f"{pos.line:>4} | "
    caret = " " * (pos.col - 1) + _paint("^" * max(1, min(pos.length, max(1, len(src) - pos.col + 1))), "caret", color)
    return [gutter + src, " " * (len(gutter) - 2) + "| " + caret]


def render(diag: Diagnostic, sources: Mapping[str, str], color: bool = False) -> str:
    """``file:line:col: error: message``, the source line with a caret, notes and a hint; ANSI colours
    when ``color``."""
    if color:
        where = _paint(f"{diag.pos}:", "where", True) + " " if diag.pos else ""
        label = _paint("error:", "error", True) if diag.severity == "error" else _paint(diag.code, "code", True)
        out = [f"{where}{label} {shown(diag.message)}"]
    else:
        out = [diag.headline()]
    if diag.pos:
        out += _excerpt(diag.pos, sources, color)
    for note in diag.notes:
        where = f" ({note.pos})" if note.pos else ""
        out.append(_paint("   = note:", "note", color) + f" {shown(note.message)}{where}")
        if note.pos:
            out += _excerpt(note.pos, sources, color)
    if diag.hint:
        out.append(_paint("   = hint:", "hint", color) + f" {shown(diag.hint)}")
    return "\n".join(out)


def render_all(diagnostics: Iterable[Diagnostic], sources: Mapping[str, str], color: bool = False) -> str:
    diagnostics = list(diagnostics)
    body = "\n\n".join(render(d, sources, color) for d in diagnostics)
    errors = sum(d.severity == "error" for d in diagnostics)
    if errors > 1:
        body += f"\n\n{errors} errors"
    return body


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A hint naming the closest of ``choices`` to ``word``, or None when nothing is close."""
    import difflib

    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None
