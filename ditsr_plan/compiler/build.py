"""Spec -> :class:`ScheduleGraph`: stage tiling, carry, ramps, time scaling (the compiler proper).

Semantics (docs/language.md has the user's version):
- stages tile ``[0, steps)`` exactly; ``a..`` runs to the last step;
- a term not mentioned in a stage holds the value it had at the end of the previous stage; a term
  never mentioned is 0; ``lr`` and ``lr_d`` start at their optimiser's setting;
- ``A->B [shape] [over N] [after N]`` holds A for ``after`` steps, moves to B over ``over`` steps
  (default: the rest of the stage), then holds B; ``->B`` starts from the carried value;
- ``--time-scale F`` multiplies every absolute step position (stage bounds, ramp starts and ends)
  and every step-valued setting by F and rounds half up, so shapes and containment are kept.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import TypeVar

from ditsr_plan.diagnostics import NAME, SCHEDULE, VALUE, Diagnostic, Note, PlanError, Pos, did_you_mean
from ditsr_plan.dsl.spec import PlanSpec, StageDecl
from ditsr_plan.dsl.syntax import KeepStmt, MetricRef, TermStmt, WatchStmt
from ditsr_plan.settings.numbers import format_steps
from ditsr_plan.settings.schemas import (
    BLOCKS,
    DEFAULT_BLOCKS,
    DIT_PRESETS,
    EVAL_METRICS,
    PACK_ROLE,
    TERM_KINDS,
    Diffusion,
    DitModel,
    Eval,
    Optim,
    Schema,
    eval_roles,
    step_fields,
)

from .graph import Block, Keep, Knob, MetricName, Piece, ScheduleGraph, Stage, Term, Watch, merge_ranges

S = TypeVar("S", bound=Schema)

MAX_SCALED_EVALS = 5  # under --time-scale below 1, 'eval every' is never below 1/5 of the run


@dataclass
class _Scale:
    factor: float

    def at(self, step: int) -> int:
        """An absolute step position, scaled and rounded half up."""
        return step if self.factor == 1 else math.floor(step * self.factor + 0.5)

    def interval(self, steps: int) -> int:
        """A step-valued setting (an interval, a warm-up): scaled, and never scaled to 0 from > 0."""
        scaled = self.at(steps)
        return max(1, scaled) if steps > 0 else 0


def compile_spec(spec: PlanSpec, time_scale: float = 1.0, prior: Iterable[Diagnostic] = ()) -> ScheduleGraph:
    """Compile a validated spec; ``prior`` errors (from loading) are raised with the compiler's own."""
    if not (math.isfinite(time_scale) and time_scale > 0):
        raise PlanError([Diagnostic(VALUE, f"time scale {time_scale} must be a positive number", None)])
    return _Compiler(spec, _Scale(time_scale), list(prior)).run()


class _Compiler:
    def __init__(self, spec: PlanSpec, scale: _Scale, prior: list[Diagnostic]):
        self.spec, self.scale = spec, scale
        self.diagnostics: list[Diagnostic] = prior
        self.total = spec.steps.value

    def error(
        self, code: str, message: str, pos: Pos | None, hint: str | None = None, notes: tuple[Note, ...] = ()
    ) -> None:
        self.diagnostics.append(Diagnostic(code, message, pos, hint, notes))

    def run(self) -> ScheduleGraph:
        spec = self.spec
        if self.total == 0:
            self.error(VALUE, "the plan has 0 steps", spec.steps.pos, "give the number of steps to train")
            raise PlanError(self.diagnostics, spec.sources)
        stages = self.check_tiling(sorted(spec.stages, key=lambda s: s.start.value))
        terms = self.terms()
        blocks = self.blocks()
        defaults = self.knob_defaults()
        terms = {
            name: replace(t, lr_knob=type(t.settings).lr_knob) if type(t.settings).lr_knob in defaults else t
            for name, t in terms.items()
        }
        self.check_knob_names(stages, defaults)
        # knobs are built even after errors above, so that ramp errors are reported with them
        scaled_total = self.scale.at(self.total)
        scaled = self.scaled_stages(stages, scaled_total)
        knobs = {name: self.knob(name, terms[name].kind, 0.0, stages, scaled) for name in terms}
        for name, default in defaults.items():
            knobs[name] = self.knob(name, name, default, stages, scaled)
        if self.diagnostics:
            raise PlanError(self.diagnostics, spec.sources)
        watches, keep = self.validation_rules(blocks)
        if self.diagnostics:
            raise PlanError(self.diagnostics, spec.sources)
        pixel = merge_ranges([r for t in terms.values() if t.pixel for r in knobs[t.name].live])
        return ScheduleGraph(
            name=spec.name,
            path=spec.path,
            total_steps=scaled_total,
            time_scale=self.scale.factor,
            stages=tuple(scaled),
            knobs=knobs,
            terms=terms,
            blocks=blocks,
            pixel_ranges=pixel,
            discriminator_ranges=self.discriminator_ranges(terms, knobs),
            watches=watches,
            keep=keep,
            sources=spec.sources,
        )

    # ---- stages ----------------------------------------------------------------------------------

    def end_of(self, stage: StageDecl) -> int:
        return stage.end.value if stage.end is not None else self.total

    def check_tiling(self, stages: list[StageDecl]) -> list[StageDecl]:
        span = f"[0, {format_steps(self.total)})"
        for stage in stages:
            if stage.end is not None and stage.end.value <= stage.start.value:
                self.error(
                    SCHEDULE,
                    f"stage {stage.name.text} is empty: it ends where or before it starts",
                    stage.end.pos,
                    "a stage a..b covers steps a to b-1; b must be above a",
                )
            elif stage.end is None and stage.start.value >= self.total:
                self.error(
                    SCHEDULE,
                    f"stage {stage.name.text} starts at {stage.start.text}, at or after the plan's last step",
                    stage.start.pos,
                    f"the plan has {format_steps(self.total)} steps",
                )
        if not stages:
            return stages
        first = stages[0]
        if first.start.value > 0:
            self.error(
                SCHEDULE,
                f"steps 0..{first.start.text} are in no stage",
                first.start.pos,
                f"stages must tile {span}: start the first stage at 0",
            )
        for prev, cur in pairwise(stages):
            prev_end = self.end_of(prev)
            here = (
                Note(
                    f"stage {prev.name.text} covers {prev.start.text}..{prev.end.text if prev.end else ''}",
                    prev.pos,
                ),
            )
            if cur.start.value < prev_end:
                self.error(
                    SCHEDULE,
                    f"stage {cur.name.text} overlaps stage {prev.name.text}: both cover step "
                    f"{format_steps(cur.start.value)}",
                    cur.start.pos,
                    f"start stage {cur.name.text} where stage {prev.name.text} ends",
                    here,
                )
            elif cur.start.value > prev_end:
                self.error(
                    SCHEDULE,
                    f"steps {format_steps(prev_end)}..{cur.start.text} are in no stage (gap "
                    f"between stages {prev.name.text} and {cur.name.text})",
                    cur.start.pos,
                    f"start stage {cur.name.text} at {format_steps(prev_end)}, or end stage "
                    f"{prev.name.text} at {cur.start.text}",
                    here,
                )
        last = stages[-1]
        if last.end is not None and last.end.value < self.total:
            self.error(
                SCHEDULE,
                f"steps {last.end.text}..{format_steps(self.total)} are in no stage",
                last.end.pos,
                f"end the last stage at the plan's end: 'stage {last.name.text} {last.start.text}..:'",
                (Note("the plan's steps are set here", self.spec.steps.pos),),
            )
        elif last.end is not None and last.end.value > self.total:
            self.error(
                SCHEDULE,
                f"stage {last.name.text} ends at {last.end.text}, after the plan's {format_steps(self.total)} steps",
                last.end.pos,
                f"raise 'steps' or end the stage at {format_steps(self.total)}",
                (Note("the plan's steps are set here", self.spec.steps.pos),),
            )
        return stages

    def scaled_stages(self, stages: list[StageDecl], total: int) -> list[Stage]:
        out = []
        for stage in stages:
            start, end = self.scale.at(stage.start.value), self.scale.at(self.end_of(stage))
            if end <= start:
                self.error(
                    SCHEDULE,
                    f"stage {stage.name.text} has no steps left at time scale {self.scale.factor:g}",
                    stage.pos,
                    "use a larger --time-scale",
                )
            out.append(Stage(stage.name.text, start, min(end, total), stage.pos))
        return out

    # ---- declarations ----------------------------------------------------------------------------

    def scaled_settings(self, settings: S) -> S:
        """``settings`` with its step-valued fields scaled by ``--time-scale``."""
        update = {name: self.scale.interval(getattr(settings, name)) for name in step_fields(type(settings))}
        return settings.model_copy(update=update) if update else settings

    def terms(self) -> dict[str, Term]:
        return {
            name: Term(
                name,
                decl.kind.text,
                self.scaled_settings(decl.settings),
                decl.pos,
                {k: s.key.pos for k, s in decl.given.items()},
            )
            for name, decl in self.spec.terms.items()
        }

    def blocks(self) -> dict[str, Block]:
        blocks = {
            name: Block(
                name,
                decl.kind.text if decl.kind else None,
                self.scaled_settings(decl.settings),
                decl.pos,
                {k: s.key.pos for k, s in decl.given.items()},
            )
            for name, decl in self.spec.blocks.items()
        }
        for name, kind in DEFAULT_BLOCKS.items():
            if name not in blocks:
                blocks[name] = Block(name, kind, self.scaled_settings(BLOCKS[name][kind]()))
        blocks["degrade"] = self.degrade_block(blocks)
        self.check_dropped_conditioning(blocks)
        self.check_eval_steps(blocks)
        ev = blocks.get("eval")
        if ev is not None and isinstance(ev.settings, Eval) and self.scale.factor < 1:
            # a shortened run keeps at most MAX_SCALED_EVALS evals: every eval samples its full number of
            # sampler steps, which --time-scale does not shorten
            floor = math.ceil(self.scale.at(self.total) / MAX_SCALED_EVALS)
            if ev.settings.every < floor:
                blocks["eval"] = replace(ev, settings=ev.settings.model_copy(update={"every": floor}))
        model = blocks["model"]
        if isinstance(model.settings, DitModel) and model.settings.path is None:
            # the DiT that runs: the preset resolved (a pretrained one's folder decides, and DitModel's dump
            # leaves these keys out)
            settings = model.settings
            preset = dict(zip(("depth", "heads", "head_dim"), DIT_PRESETS[settings.preset], strict=True))
            update = {k: v for k, v in preset.items() if getattr(settings, k) is None}
            blocks["model"] = replace(model, settings=settings.model_copy(update=update))
        return dict(sorted(blocks.items()))

    def check_dropped_conditioning(self, blocks: dict[str, Block]) -> None:
        """``diffusion dropout_drops=style`` needs the pyramid adapter's style vector, ``eval
        guidance_drops=adapter`` an adapter (otherwise the unconditional branch would be the conditional one).
        Not judged when the plan's model block is itself invalid (its error is the one to fix)."""
        if "model" in self.spec.invalid_blocks:
            return
        model = blocks["model"].settings
        cond = getattr(model, "cond", "")
        pyramid = "adapter" in cond and getattr(model, "adapter", None) == "pyramid"
        checks = (
            ("diffusion", "dropout_drops", "style", pyramid, "model pixart cond=concat+adapter adapter=pyramid"),
            ("eval", "guidance_drops", "adapter", "adapter" in cond, "a pretrained model with cond=concat+adapter"),
        )
        for name, key, value, possible, needs in checks:
            block = blocks.get(name)
            if block is not None and getattr(block.settings, key, None) == value and not possible:
                self.error(
                    VALUE,
                    f"{name} {key}={value} needs an LR adapter to drop, and this plan's model has none",
                    block.value_origins.get(key, block.origin),
                    hint=f"use {needs}, or {key}=lr",
                )

    def check_eval_steps(self, blocks: dict[str, Block]) -> None:
        """The eval's sampler takes at most the diffusion's timesteps (diffusers refuses more, at the first eval)."""
        ev, diffusion = blocks.get("eval"), blocks["diffusion"].settings
        if ev is None or not isinstance(ev.settings, Eval) or not isinstance(diffusion, Diffusion):
            return
        if ev.settings.steps > diffusion.train_steps:
            self.error(
                VALUE,
                f"eval steps={ev.settings.steps} is more than the diffusion's {diffusion.train_steps} timesteps",
                ev.value_origins.get("steps", ev.origin),
                hint=f"use eval steps={diffusion.train_steps} or fewer",
            )

    def degrade_block(self, blocks: dict[str, Block]) -> Block:
        """The degradation: the ``degrade`` block when the plan writes one, else the defaults of the data
        block's ``degrade=`` kind (bicubic for paired data, whose LR is given, and whose eval LR is bicubic)."""
        data = blocks["data"]
        kind = getattr(data.settings, "degrade", None)  # paired data has no degrade= (its LR is given)
        written = kind if "degrade" in data.value_origins else None
        block = blocks.get("degrade")
        if block is None:
            kind = kind or "bicubic"
            return Block("degrade", kind, self.scaled_settings(BLOCKS["degrade"][kind]()))
        if written is not None and written != block.kind:
            self.error(
                VALUE,
                f"data degrade={written} and the degrade block ({block.kind}) disagree",
                data.value_origins["degrade"],
                hint=f"drop degrade= from data (the degrade block decides) or write 'degrade {written} ...'",
            )
        if kind is not None:
            blocks["data"] = replace(data, settings=data.settings.model_copy(update={"degrade": block.kind}))
        return block

    def knob_defaults(self) -> dict[str, float]:
        """``lr`` (the optimiser's), and a kind's own learning-rate knob (``lr_d``) when exactly one term of
        such a kind is declared, starting at that term's ``lr``."""
        optim = self.spec.blocks.get("optim")
        defaults = {"lr": optim.settings.lr if optim and isinstance(optim.settings, Optim) else Optim().lr}
        for knob in self.lr_knobs():
            owners = [t for t in self.spec.terms.values() if TERM_KINDS[t.kind.text].lr_knob == knob]
            if len(owners) == 1:
                # a kind with an lr knob has an lr setting, where the knob starts
                defaults[knob] = float(getattr(owners[0].settings, "lr"))  # noqa: B009
        return defaults

    @staticmethod
    def lr_knobs() -> list[str]:
        return sorted({k.lr_knob for k in TERM_KINDS.values() if k.lr_knob})

    def check_knob_names(self, stages: list[StageDecl], defaults: dict[str, float]) -> None:
        known = [*self.spec.terms, *self.spec.invalid_terms, *defaults]
        for stage in stages:
            for knob, stmt in stage.terms.items():
                if knob in self.spec.terms or knob in defaults or knob in self.spec.invalid_terms:
                    continue
                if knob in self.lr_knobs():
                    kinds = [k.kind for k in TERM_KINDS.values() if k.lr_knob == knob]
                    owners = sum(t.kind.text in kinds for t in self.spec.terms.values())
                    reason = (
                        f"no {' or '.join(kinds)} term is declared"
                        if owners == 0
                        else f"several {' or '.join(kinds)} terms are declared; set each one's lr instead"
                    )
                    self.error(
                        NAME,
                        f"'{knob}' schedules the learning rate of a {' or '.join(kinds)} term, but {reason}",
                        stmt.pos,
                        f"declare one 'loss NAME {kinds[0]} ...'" if owners == 0 else None,
                    )
                else:
                    hint = did_you_mean(knob, known) or (
                        f"declare it first: 'loss {knob} KIND ...' (kinds: {', '.join(TERM_KINDS)})"
                    )
                    self.error(NAME, f"unknown term '{knob}' in stage {stage.name.text}", stmt.pos, hint)

    # ---- validation rules ---------------------------------------------------------------------------

    def metric(self, ref: MetricRef, roles: tuple[str, ...]) -> MetricName | None:
        if ref.metric.text not in EVAL_METRICS:
            self.error(
                NAME,
                f"unknown metric '{ref.metric.text}'",
                ref.metric.pos,
                did_you_mean(ref.metric.text, EVAL_METRICS) or "metrics: " + ", ".join(EVAL_METRICS),
            )
            return None
        if ref.image and ref.image.text not in roles:
            hint = did_you_mean(ref.image.text, roles) or "images: " + ", ".join(roles) + " (or none: the mean)"
            if ref.image.text == PACK_ROLE:
                hint = "pack.* is the mean over an eval pack: give 'eval ... pack=DIR'"
            self.error(NAME, f"unknown validation image '{ref.image.text}'", ref.image.pos, hint)
            return None
        return MetricName(ref.image.text if ref.image else None, ref.metric.text)

    def validation_rules(self, blocks: dict[str, Block]) -> tuple[tuple[Watch, ...], Keep | None]:
        """``watch`` and ``keep best`` lines, their metric names checked against the eval images."""
        spec = self.spec
        rules: list[WatchStmt | KeepStmt] = [*spec.watches, *([spec.keep] if spec.keep else [])]
        if not rules:
            return (), None
        if "eval" not in blocks:
            for rule in rules:
                self.error(
                    VALUE,
                    f"'{'watch' if isinstance(rule, WatchStmt) else 'keep best'}' acts on validation "
                    "metrics, but the plan has no 'eval' line",
                    rule.pos,
                    "add one, e.g. 'eval every=1k steps=50'",
                )
            return (), None
        ev = blocks["eval"].settings
        assert isinstance(ev, Eval)
        roles = eval_roles(ev.images, ev.pack)
        watches = []
        for w in spec.watches:
            name = self.metric(w.metric, roles)
            after = self.scale.at(w.after.value) if w.after else 0
            if name:
                watches.append(Watch(name, w.op, w.value, w.evals, after, w.action, w.pos))
        keep = None
        if spec.keep:
            k = spec.keep
            name = self.metric(k.metric, roles)
            where = fallback = None
            if k.where and k.fallback:
                w_name, op, value, _ = k.where
                where_metric, fallback_metric = self.metric(w_name, roles), self.metric(k.fallback[1], roles)
                where = Watch(where_metric, op, value, 1, 0, "") if where_metric else None
                fallback = (k.fallback[0], fallback_metric) if fallback_metric else None
            if name:
                keep = Keep(k.count, k.direction, name, where, fallback, k.pos)
        return tuple(watches), keep

    # ---- knobs -----------------------------------------------------------------------------------

    def knob(self, name: str, kind: str, default: float, stages: list[StageDecl], scaled: list[Stage]) -> Knob:
        pieces: list[Piece] = []
        carry = default
        for decl, stage in zip(stages, scaled, strict=True):
            stmt = decl.terms.get(name)
            if stmt is None:
                pieces.append(Piece(stage.start, stage.end, carry, carry, "const", decl.pos))
                continue
            carry = self.statement(stmt, decl, stage, carry, pieces)
        return Knob(name, kind, tuple(_canonical(pieces)))

    def statement(self, stmt: TermStmt, decl: StageDecl, stage: Stage, carry: float, out: list[Piece]) -> float:
        origin = stmt.pos
        if stmt.op in ("const", "off"):
            value = stmt.value.value if stmt.op == "const" and stmt.value else 0.0
            out.append(Piece(stage.start, stage.end, value, value, "const", origin))
            return value
        v0 = stmt.start.value if stmt.start is not None else carry
        assert stmt.end is not None  # a ramp has its end value
        v1 = stmt.end.value
        begin, end = decl.start.value, self.end_of(decl)
        after = stmt.after.value if stmt.after else 0
        ramp_start = begin + after
        if stmt.after and ramp_start >= end:
            self.error(
                SCHEDULE,
                f"the ramp of '{stmt.knob.text}' starts {stmt.after.text} into stage "
                f"{decl.name.text}, at or past its end",
                stmt.after.pos,
                f"stage {decl.name.text} has {format_steps(end - begin)} steps",
            )
            return v1
        ramp_end = ramp_start + stmt.over.value if stmt.over else end
        if stmt.over and stmt.over.value == 0:
            self.error(
                SCHEDULE,
                "a ramp over 0 steps is a jump",
                stmt.over.pos,
                f"write '{stmt.knob.text} {stmt.end.text}' for a constant, or ramp over more steps",
            )
            return v1
        if ramp_end > end:
            self.error(
                SCHEDULE,
                f"the ramp of '{stmt.knob.text}' runs to step {format_steps(ramp_end)}, past "
                f"the end of stage {decl.name.text} ({format_steps(end)})",
                stmt.over.pos if stmt.over else stmt.pos,
                f"stage {decl.name.text} has {format_steps(end - ramp_start)} steps left for it: shorten "
                "'over' or continue the ramp in the next stage with '->'",
                (Note(f"stage {decl.name.text} is declared here", decl.pos),),
            )
            return v1
        s, e = self.scale.at(ramp_start), self.scale.at(ramp_end)
        shape = stmt.shape.text if stmt.shape else "linear"
        if s > stage.start:
            out.append(Piece(stage.start, s, v0, v0, "const", origin))
        if e > s:
            out.append(Piece(s, e, v0, v1, shape, origin))
        if e < stage.end:
            out.append(Piece(max(s, e), stage.end, v1, v1, "const", origin))
        return v1

    def discriminator_ranges(self, terms: dict[str, Term], knobs: dict[str, Knob]) -> tuple[tuple[int, int], ...]:
        """Steps where a term's own modules train after the generator's step (a GAN's D): while the term is
        live, and its warm-up's steps before it first is."""
        ranges: list[tuple[int, int]] = []
        for term in terms.values():
            kind = type(term.settings)
            if not kind.after_step:
                continue
            live = knobs[term.name].live
            ranges += live
            warmup: int = getattr(term.settings, kind.warmup) if kind.warmup else 0
            if live and warmup:
                first = live[0][0]
                ranges.append((max(0, first - warmup), first))
        return merge_ranges(ranges)


def _canonical(pieces: list[Piece]) -> list[Piece]:
    """Merge equal neighbouring constants so that plans that mean the same give the same pieces."""
    out: list[Piece] = []
    for p in pieces:
        if p.shape != "const" and p.v0 == p.v1:
            p = Piece(p.start, p.end, p.v0, p.v0, "const", p.origin)
        if out and out[-1].shape == "const" and p.shape == "const" and out[-1].v0 == p.v0:
            out[-1] = Piece(out[-1].start, p.end, p.v0, p.v0, "const", out[-1].origin)
        else:
            out.append(p)
    return out
