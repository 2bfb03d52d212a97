"""The validated plan spec: one plan with its ``extends`` chain resolved and every setting validated.

A spec still speaks the user's language (stages with their term statements, positions in the source
files); the compiler turns it into the schedule graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ditsr_plan.diagnostics import Pos
from ditsr_plan.dsl.syntax import KeepStmt, Setting, Steps, TermStmt, WatchStmt, Word
from ditsr_plan.settings.schemas import Schema, TermKind


@dataclass(frozen=True)
class TermDecl:
    """``loss NAME KIND key=value...``, its settings validated by the kind's schema."""

    name: Word
    kind: Word
    settings: TermKind
    given: dict[str, Setting]  # the key=value pairs as written, for positions
    pos: Pos


@dataclass(frozen=True)
class BlockDecl:
    """A settings block (``ema``, ``pixel``, ...), validated by its schema."""

    name: Word
    kind: Word | None
    settings: Schema
    given: dict[str, Setting]
    pos: Pos


@dataclass(frozen=True)
class StageDecl:
    """A stage after ``extends``/``amend``: its bounds and one statement per knob it mentions."""

    name: Word
    start: Steps
    end: Steps | None
    terms: dict[str, TermStmt]
    pos: Pos


@dataclass(frozen=True)
class PlanSpec:
    name: str
    path: str
    steps: Steps
    terms: dict[str, TermDecl]
    blocks: dict[str, BlockDecl]
    stages: list[StageDecl]
    sources: dict[str, str] = field(default_factory=dict)  # every file read: path -> text
    invalid_terms: frozenset[str] = frozenset()  # declared, but their settings did not validate
    watches: tuple[WatchStmt, ...] = ()
    keep: KeepStmt | None = None
    invalid_blocks: frozenset[str] = frozenset()  # written, but their kind or settings did not validate
