"""The schedule graph: per knob, ordered pieces of exact piecewise functions over the steps.

A graph is immutable and JSON-serialisable. It answers what the runtime asks at every step:
``weights_at(step)``, ``live_terms(step)``, ``needs_at(step)`` and ``stage_at(step)``.
Positions (``origin``) point back at the plan source for lint; they are not part of the meaning
and so not part of :attr:`ScheduleGraph.hash`.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, TypeVar, cast, overload

from pydantic import ValidationError

from ditsr_plan.diagnostics import Pos
from ditsr_plan.settings.schemas import (
    BLOCKS,
    TERM_KINDS,
    BicubicDegrade,
    BuiltinData,
    CustomModel,
    Diffusion,
    DitModel,
    Ema,
    Eval,
    FolderData,
    HighorderDegrade,
    Log,
    Optim,
    PairedData,
    PixartModel,
    Pixel,
    PixelUnshuffleLatent,
    RealesrganDegrade,
    Run,
    Schema,
    TermKind,
    VaeLatent,
    all_values,
    plain_values,
)

GRAPH_FORMAT = 1
S = TypeVar("S", bound=Schema)
SHAPES = ("const", "linear", "cosine")


@dataclass(frozen=True)
class Piece:
    """The knob's value on steps ``[start, end)``: ``v0`` at ``start`` moving to ``v1`` at ``end``.

    ``const`` holds ``v0`` (== ``v1``); ``linear`` and ``cosine`` interpolate with
    ``t = (step - start) / (end - start)``: linear ``v0 + (v1 - v0) t``, cosine
    ``v0 + (v1 - v0) (1 - cos(pi t)) / 2``.
    """

    start: int
    end: int
    v0: float
    v1: float
    shape: str = "const"
    origin: Pos | None = field(default=None, compare=False)

    def at(self, step: float) -> float:
        if self.shape == "const":
            return self.v0
        t = (step - self.start) / (self.end - self.start)
        if self.shape == "cosine":
            t = (1.0 - math.cos(math.pi * t)) / 2.0
        return self.v0 + (self.v1 - self.v0) * t

    @property
    def peak(self) -> float:
        return max(self.v0, self.v1)

    def live_range(self) -> tuple[int, int] | None:
        """Steps of this piece where the value is > 0 (weights are never negative)."""
        if self.v0 > 0:
            return (self.start, self.end)
        if self.v1 > 0 and self.shape != "const" and self.start + 1 < self.end:
            return (self.start + 1, self.end)
        return None

    def to_json(self) -> list[Any]:
        return [self.start, self.end, self.v0, self.v1, self.shape]


def merge_ranges(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return tuple(out)


def in_ranges(ranges: tuple[tuple[int, int], ...], step: int) -> bool:
    i = bisect.bisect_right(ranges, (step, math.inf)) - 1
    return i >= 0 and ranges[i][0] <= step < ranges[i][1]


@dataclass(frozen=True)
class Knob:
    """A scheduled quantity: a loss term's weight, or ``lr`` / ``lr_d``."""

    name: str
    kind: str
    pieces: tuple[Piece, ...]
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False)
    live: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_starts", tuple(p.start for p in self.pieces))
        ranges = [r for p in self.pieces if (r := p.live_range())]
        object.__setattr__(self, "live", merge_ranges(ranges))

    def piece_at(self, step: int) -> Piece:
        if step < 0:
            raise ValueError(f"step {step} is negative")
        return self.pieces[bisect.bisect_right(self._starts, step) - 1]

    def at(self, step: int) -> float:
        """The value at ``step``; past the last step the final value holds."""
        piece = self.piece_at(step)
        return piece.v1 if step >= piece.end else piece.at(step)

    @property
    def peak(self) -> float:
        return max(p.peak for p in self.pieces)

    def is_live(self, step: int) -> bool:
        return in_ranges(self.live, step)


@dataclass(frozen=True)
class Stage:
    name: str
    start: int
    end: int
    origin: Pos | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Term:
    """A declared loss term: its kind, its full settings (the kind's frozen schema instance, defaults filled
    in), and whether a stage schedules its own modules' learning rate (``lr_knob``, e.g. ``lr_d``)."""

    name: str
    kind: str
    settings: TermKind
    origin: Pos | None = field(default=None, compare=False)
    setting_origins: Mapping[str, Pos] = field(default_factory=dict, compare=False, repr=False)
    lr_knob: str | None = field(default=None, compare=False)

    @property
    def pixel(self) -> bool:
        """Computed on the decoded pixel patch."""
        return type(self.settings).pixel

    @property
    def implementation(self) -> str:
        """The runtime class that computes it (``module:Class``; where the code lives is not part of the meaning)."""
        return type(self.settings).implementation

    @property
    def values(self) -> dict[str, Any]:
        """The settings as plain JSON data (fields added late left out at their default: see HashedWhenSet)."""
        return plain_values(self.settings)

    @property
    def all_values(self) -> dict[str, Any]:
        """Every setting as plain JSON data, those added late at their default included (what ``show`` lists)."""
        return all_values(self.settings)


@dataclass(frozen=True)
class Block:
    """A settings block (``ema``, ``pixel``, ...): its kind (None for a block that takes none) and its settings,
    the kind's frozen schema instance with every key, defaults filled in."""

    name: str
    kind: str | None
    settings: Schema
    origin: Pos | None = field(default=None, compare=False)
    value_origins: Mapping[str, Pos] = field(default_factory=dict, compare=False, repr=False)

    @property
    def values(self) -> dict[str, Any]:
        """The settings as plain JSON data (fields added late left out at their default: see HashedWhenSet)."""
        return plain_values(self.settings)

    @property
    def all_values(self) -> dict[str, Any]:
        """Every setting as plain JSON data, those added late at their default included (what ``show`` lists)."""
        return all_values(self.settings)


@dataclass(frozen=True)
class MetricName:
    """A validation metric: ``image`` None is the mean over the validation images."""

    image: str | None
    metric: str

    def __str__(self) -> str:
        return f"{self.image}.{self.metric}" if self.image else self.metric

    def of(self, record: Any) -> float | None:
        """The value in an eval record (anything with ``images`` and ``mean``, as ``runtime.records.EvalRecord``)."""
        if self.image == "pack":  # an eval pack's mean
            pack = getattr(record, "pack", None) or {}
            value = (pack.get("mean") or {}).get(self.metric)
        else:
            values = record.images.get(self.image, {}) if self.image else record.mean
            value = values.get(self.metric)
        return cast("float | None", value)  # records hold floats (JSON numbers)


@dataclass(frozen=True)
class Watch:
    """``watch METRIC OP VALUE for N evals after STEP: stop|warn``."""

    metric: MetricName
    op: str
    value: float
    evals: int
    after: int
    action: str
    origin: Pos | None = field(default=None, compare=False)

    def holds(self, value: float | None) -> bool:
        if value is None:
            return False
        return {">": value > self.value, "<": value < self.value, ">=": value >= self.value, "<=": value <= self.value}[
            self.op
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": str(self.metric),
            "op": self.op,
            "value": self.value,
            "evals": self.evals,
            "after": self.after,
            "action": self.action,
        }


@dataclass(frozen=True)
class Keep:
    """``keep best COUNT by DIRECTION METRIC [where WHERE else FALLBACK]``: checkpoints that meet
    ``where`` rank first, by ``metric``; the others follow, by the fallback."""

    count: int
    direction: str
    metric: MetricName
    where: Watch | None = None  # its op/value is the condition (evals, after, action unused)
    fallback: tuple[str, MetricName] | None = None
    origin: Pos | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "direction": self.direction,
            "metric": str(self.metric),
            "where": [str(self.where.metric), self.where.op, self.where.value] if self.where else None,
            "fallback": [self.fallback[0], str(self.fallback[1])] if self.fallback else None,
        }


@dataclass(frozen=True)
class Needs:
    """What a step must compute besides the diffusion loss."""

    pixel: bool
    discriminator: bool


@dataclass(frozen=True)
class ScheduleGraph:
    name: str
    path: str
    total_steps: int
    time_scale: float
    stages: tuple[Stage, ...]
    knobs: Mapping[str, Knob]
    terms: Mapping[str, Term]
    blocks: Mapping[str, Block]
    pixel_ranges: tuple[tuple[int, int], ...]
    discriminator_ranges: tuple[tuple[int, int], ...]
    watches: tuple[Watch, ...] = ()
    keep: Keep | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    hash: str = field(init=False)

    def __post_init__(self) -> None:
        for name in ("knobs", "terms", "blocks", "sources"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
        digest = hashlib.sha256(json.dumps(self.meaning(), sort_keys=True).encode()).hexdigest()
        object.__setattr__(self, "hash", digest[:16])

    # ---- what the runtime asks -----------------------------------------------------------------

    def weights_at(self, step: int) -> dict[str, float]:
        """The value of every knob at ``step`` (every declared term's weight, ``lr``, ``lr_d``)."""
        return {name: knob.at(step) for name, knob in self.knobs.items()}

    def live_terms(self, step: int) -> list[str]:
        """Terms whose weight is > 0 at ``step``, in declaration order."""
        return [name for name in self.terms if self.knobs[name].is_live(step)]

    def needs_at(self, step: int) -> Needs:
        return Needs(in_ranges(self.pixel_ranges, step), in_ranges(self.discriminator_ranges, step))

    def stage_at(self, step: int) -> Stage:
        if step < 0:
            raise ValueError(f"step {step} is negative")
        i = bisect.bisect_right([s.start for s in self.stages], step) - 1
        return self.stages[i]

    # ---- the settings blocks, typed ---------------------------------------------------------------

    @overload
    def block(self, name: Literal["ema"]) -> Ema | None: ...
    @overload
    def block(self, name: Literal["eval"]) -> Eval | None: ...
    @overload
    def block(self, name: Literal["pixel"]) -> Pixel: ...
    @overload
    def block(self, name: Literal["optim"]) -> Optim: ...
    @overload
    def block(self, name: Literal["model"]) -> DitModel | PixartModel | CustomModel: ...
    @overload
    def block(self, name: Literal["latent"]) -> PixelUnshuffleLatent | VaeLatent: ...
    @overload
    def block(self, name: Literal["diffusion"]) -> Diffusion: ...
    @overload
    def block(self, name: Literal["data"]) -> BuiltinData | FolderData | PairedData: ...
    @overload
    def block(self, name: Literal["degrade"]) -> BicubicDegrade | HighorderDegrade | RealesrganDegrade: ...
    @overload
    def block(self, name: Literal["run"]) -> Run: ...
    @overload
    def block(self, name: Literal["log"]) -> Log: ...
    def block(self, name: str) -> Schema | None:
        """The settings of block ``name`` (None for an optional block the plan does not write: ``ema``,
        ``eval``), typed by the block's schemas."""
        found = self.blocks.get(name)
        return found.settings if found else None

    # ---- serialisation -------------------------------------------------------------------------

    def meaning(self) -> dict[str, Any]:
        """Everything that changes training, and nothing else: what :attr:`hash` is taken of."""
        return {
            "format": GRAPH_FORMAT,
            "total_steps": self.total_steps,
            "stages": [[s.name, s.start, s.end] for s in self.stages],
            "knobs": {n: {"kind": k.kind, "pieces": [p.to_json() for p in k.pieces]} for n, k in self.knobs.items()},
            "terms": {n: {"kind": t.kind, "settings": t.values} for n, t in self.terms.items()},
            "blocks": {n: {"kind": b.kind, "values": b.values} for n, b in self.blocks.items()},
            "watches": [w.to_json() for w in self.watches],
            "keep": self.keep.to_json() if self.keep else None,
        }

    def to_json(self) -> dict[str, Any]:
        """The graph as plain JSON data, source positions included (``from_json`` reads it back)."""
        data = self.meaning()
        data.update(
            name=self.name,
            path=self.path,
            hash=self.hash,
            time_scale=self.time_scale,
            term_order=list(self.terms),
            pixel_terms=[n for n, t in self.terms.items() if t.pixel],
            implementations={n: t.implementation for n, t in self.terms.items()},
            lr_knobs={n: t.lr_knob for n, t in self.terms.items() if t.lr_knob},
            pixel_ranges=[list(r) for r in self.pixel_ranges],
            discriminator_ranges=[list(r) for r in self.discriminator_ranges],
            origins={
                "stages": [_pos(s.origin) for s in self.stages],
                "pieces": {n: [_pos(p.origin) for p in k.pieces] for n, k in self.knobs.items()},
                "terms": {
                    n: [_pos(t.origin), {k: _pos(v) for k, v in t.setting_origins.items()}]
                    for n, t in self.terms.items()
                },
                "blocks": {
                    n: [_pos(b.origin), {k: _pos(v) for k, v in b.value_origins.items()}]
                    for n, b in self.blocks.items()
                },
            },
        )
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], sources: Mapping[str, str] | None = None) -> ScheduleGraph:
        if data.get("format") != GRAPH_FORMAT:
            raise ValueError(f"schedule graph format {data.get('format')!r}; this version reads {GRAPH_FORMAT}")
        at = data.get("origins") or {}
        stage_at = at.get("stages") or [None] * len(data["stages"])
        piece_at = at.get("pieces", {})
        term_at = at.get("terms", {})
        block_at = at.get("blocks", {})

        def origins(table: dict[str, Any], name: str) -> tuple[Pos | None, dict[str, Pos]]:
            own, keys = table.get(name, [None, {}])
            return _unpos(own), {k: pos for k, v in keys.items() if (pos := _unpos(v))}

        def piece(raw: list[Any], origin: Any) -> Piece:
            s, e, v0, v1, shape = raw
            return Piece(s, e, v0, v1, shape, _unpos(origin))

        graph = cls(
            name=data["name"],
            path=data["path"],
            total_steps=data["total_steps"],
            time_scale=data["time_scale"],
            stages=tuple(Stage(n, a, b, _unpos(o)) for (n, a, b), o in zip(data["stages"], stage_at, strict=True)),
            knobs={
                n: Knob(
                    n,
                    k["kind"],
                    tuple(
                        piece(p, o)
                        for p, o in zip(k["pieces"], piece_at.get(n) or [None] * len(k["pieces"]), strict=True)
                    ),
                )
                for n, k in data["knobs"].items()
            },
            terms={
                n: Term(
                    n,
                    data["terms"][n]["kind"],
                    _term_settings(n, data["terms"][n]),
                    *origins(term_at, n),
                    lr_knob=data.get("lr_knobs", {}).get(n),
                )
                for n in data["term_order"]
            },
            blocks={
                n: Block(n, b["kind"], _block_settings(n, b), *origins(block_at, n)) for n, b in data["blocks"].items()
            },
            pixel_ranges=tuple(tuple(r) for r in data["pixel_ranges"]),
            discriminator_ranges=tuple(tuple(r) for r in data["discriminator_ranges"]),
            watches=tuple(
                _watch(w, o)
                for w, o in zip(
                    data.get("watches", []), at.get("watches") or [None] * len(data.get("watches", [])), strict=True
                )
            ),
            keep=_keep(data.get("keep"), at.get("keep")),
            sources=sources or {},
        )
        if graph.hash != data["hash"]:
            raise ValueError(f"schedule graph hash mismatch: file says {data['hash']}, content is {graph.hash}")
        return graph


def _validated(schema: type[S], values: Any, what: str) -> S:
    """Settings read back from JSON are validated again: a graph written by another version of the settings
    is refused here, not half-read by the runtime."""
    try:
        return schema.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(
            f"schedule graph {what}: {where + ': ' if where else ''}{first['msg']}; the graph was written by a "
            f"version of ditsr-plan whose settings differ from this one's (compile the plan again)"
        ) from None


def _term_settings(name: str, data: dict[str, Any]) -> TermKind:
    schema = TERM_KINDS.get(data["kind"])
    if schema is None:
        raise ValueError(f"schedule graph term {name}: kind {data['kind']!r} is unknown to this version")
    return _validated(schema, data["settings"], f"term {name}")


def _block_settings(name: str, data: dict[str, Any]) -> Schema:
    schema = BLOCKS.get(name, {}).get(data["kind"])
    if schema is None:
        raise ValueError(f"schedule graph block {name} ({data['kind']}) is unknown to this version")
    return _validated(schema, data["values"], f"block {name}")


def _metric(text: str) -> MetricName:
    image, _, metric = text.rpartition(".")
    return MetricName(image or None, metric)


def _watch(data: dict[str, Any], origin: list[Any] | None) -> Watch:
    return Watch(
        _metric(data["metric"]), data["op"], data["value"], data["evals"], data["after"], data["action"], _unpos(origin)
    )


def _keep(data: dict[str, Any] | None, origin: list[Any] | None) -> Keep | None:
    if data is None:
        return None
    where = Watch(_metric(data["where"][0]), data["where"][1], data["where"][2], 1, 0, "") if data["where"] else None
    fallback = (data["fallback"][0], _metric(data["fallback"][1])) if data["fallback"] else None
    return Keep(data["count"], data["direction"], _metric(data["metric"]), where, fallback, _unpos(origin))


def _pos(pos: Pos | None) -> list[Any] | None:
    return [pos.file, pos.line, pos.col, pos.length] if pos else None


def _unpos(raw: list[Any] | None) -> Pos | None:
    return Pos(*raw) if raw else None
