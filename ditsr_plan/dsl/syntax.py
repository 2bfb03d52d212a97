"""The syntax tree of one plan file: statements with the positions of everything in them.

These nodes hold what the user wrote (text and position) next to what it means (parsed numbers),
so that later phases can point at the source and ``fmt`` can print it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ditsr_plan.diagnostics import Pos


@dataclass(frozen=True)
class Word:
    text: str
    pos: Pos


@dataclass(frozen=True)
class Steps:
    value: int
    text: str
    pos: Pos


@dataclass(frozen=True)
class Weight:
    value: float
    text: str
    pos: Pos


@dataclass(frozen=True)
class Setting:
    """``key=value``; the value stays text until its block's schema validates it."""

    key: Word
    value: str
    value_pos: Pos


@dataclass(frozen=True)
class TermStmt:
    """One statement of a stage: ``TERM 1``, ``TERM off``, ``TERM A->B [shape] [over N] [after N]``."""

    knob: Word
    op: Literal["const", "off", "ramp"]
    value: Weight | None = None  # const
    start: Weight | None = None  # ramp; None ramps from the value carried in
    end: Weight | None = None  # ramp
    shape: Word | None = None
    over: Steps | None = None
    after: Steps | None = None

    @property
    def pos(self) -> Pos:
        return self.knob.pos


@dataclass(frozen=True)
class PlanStmt:
    name: Word
    pos: Pos


@dataclass(frozen=True)
class StepsStmt:
    steps: Steps
    pos: Pos


@dataclass(frozen=True)
class ExtendsStmt:
    path: str
    path_pos: Pos
    pos: Pos


@dataclass(frozen=True)
class LossStmt:
    name: Word
    kind: Word
    settings: tuple[Setting, ...]
    pos: Pos


@dataclass(frozen=True)
class BlockStmt:
    """A settings block: ``ema decay=0.999``, ``data folder root=...``."""

    name: Word
    kind: Word | None
    settings: tuple[Setting, ...]
    pos: Pos


@dataclass(frozen=True)
class StageStmt:
    """``stage NAME a..b: terms`` or, with ``amend``, ``amend stage NAME: terms``."""

    name: Word
    start: Steps | None
    end: Steps | None
    terms: tuple[TermStmt, ...]
    amend: bool
    pos: Pos


@dataclass(frozen=True)
class MetricRef:
    """``psnr`` (the mean over the validation images) or ``defocus.fhr`` (one image's)."""

    image: Word | None
    metric: Word

    @property
    def text(self) -> str:
        return f"{self.image.text}.{self.metric.text}" if self.image else self.metric.text

    @property
    def pos(self) -> Pos:
        return (self.image or self.metric).pos


@dataclass(frozen=True)
class WatchStmt:
    """``watch METRIC OP VALUE [for N evals] [after STEP]: stop|warn``."""

    metric: MetricRef
    op: str
    value: float
    value_text: str
    evals: int
    after: Steps | None
    action: str
    pos: Pos


@dataclass(frozen=True)
class KeepStmt:
    """``keep best K by min|max METRIC [where METRIC OP VALUE else min|max METRIC]``."""

    count: int
    direction: str
    metric: MetricRef
    where: tuple[MetricRef, str, float, str] | None  # metric, op, value, value text
    fallback: tuple[str, MetricRef] | None
    pos: Pos


Statement = PlanStmt | StepsStmt | ExtendsStmt | LossStmt | BlockStmt | StageStmt | WatchStmt | KeepStmt


@dataclass(frozen=True)
class Comment:
    text: str
    line: int


@dataclass(frozen=True)
class Chunk:
    """A statement as laid out in the file: its lines, and the comments on them."""

    statement: Statement | None  # None for a statement that did not parse
    first_line: int
    last_line: int
    comments: tuple[Comment, ...]


@dataclass(frozen=True)
class PlanFile:
    """A parsed plan file. ``layout`` keeps blank lines and comments for ``fmt``."""

    path: str
    text: str
    statements: tuple[Statement, ...]
    layout: tuple[Chunk | Comment | None, ...]  # None is a blank line
