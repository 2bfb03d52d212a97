"""Plan files -> validated :class:`PlanSpec`: resolves ``extends`` and validates every setting.

A child plan overrides its parent by name: ``steps``; a ``loss`` declaration (replaced whole); a
settings block (keys merged, or replaced whole when the child names another kind); a stage
(restated: replaced whole). ``amend stage NAME: ...`` adds or replaces single term statements of
the parent's stage. All errors of all files in the chain are collected and raised together.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from ditsr_plan.diagnostics import (
    EXTENDS,
    FILE,
    NAME,
    SET_FILE,
    VALUE,
    Diagnostic,
    Note,
    PlanError,
    Pos,
    did_you_mean,
)
from ditsr_plan.dsl import field_errors
from ditsr_plan.dsl.parser import parse_plan_partial
from ditsr_plan.dsl.spec import BlockDecl, PlanSpec, StageDecl, TermDecl
from ditsr_plan.dsl.syntax import (
    BlockStmt,
    ExtendsStmt,
    KeepStmt,
    LossStmt,
    PlanStmt,
    Setting,
    StageStmt,
    Statement,
    Steps,
    StepsStmt,
    TermStmt,
    WatchStmt,
    Word,
)
from ditsr_plan.settings.schemas import BLOCKS, DEFAULT_BLOCKS, TERM_KINDS, path_fields

MAX_EXTENDS_DEPTH = 64
MAX_PLAN_BYTES = 1 << 20  # a plan file (or a parent) larger than this is refused without being read
PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")  # their "regular files" are not files: never read as plans


@dataclass
class _Stage:
    name: Word
    start: Steps
    end: Steps | None
    terms: dict[str, TermStmt]
    pos: Pos


@dataclass
class _Merged:
    """A plan's statements after extends, before validation."""

    name: Word | None = None
    steps: Steps | None = None
    losses: dict[str, LossStmt] = field(default_factory=dict)
    blocks: dict[str, tuple[BlockStmt, dict[str, Setting]]] = field(default_factory=dict)
    stages: dict[str, _Stage] = field(default_factory=dict)
    watches: list[WatchStmt] = field(default_factory=list)
    keep: KeepStmt | None = None
    incomplete: bool = False  # a statement of this plan or a parent did not parse (or the parent is missing)


M = TypeVar("M", bound=BaseModel)


def resolve_paths(schema: type[M], settings: M, given: dict[str, Setting]) -> M:
    """``settings`` with every relative path made absolute: against the folder of the plan file that wrote
    it (a parent's for a key it inherits), against the current directory for a ``--set``. A field's default
    (``caption=null``, ``images=builtin``) and an unset one are left as they are (an empty path never gets
    here: :meth:`validate_settings` refuses it)."""
    updates = {}
    for key in path_fields(schema):
        setting, value = given.get(key), getattr(settings, key)
        if setting is None or not value or value == schema.model_fields[key].default:
            continue
        file = setting.value_pos.file
        base = os.getcwd() if file == SET_FILE else os.path.dirname(os.path.abspath(file))
        if key == "images":  # ROLE=PATH,ROLE=PATH
            roles = (item.partition("=") for item in value.split(","))
            updates[key] = ",".join(f"{r}{eq}{_absolute(p.strip(), base) if eq else p}" for r, eq, p in roles)
        else:
            updates[key] = _absolute(value, base)
    return settings.model_copy(update=updates) if updates else settings


def _absolute(path: str, base: str) -> str:
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def _refusal(path: str, parent: bool) -> str | None:
    """Why ``path`` is not read as a plan, in words ("missing" when it does not exist), or None. Decided from its
    name and ``os.stat`` only: a FIFO, a device or a pseudo-file is never opened."""
    if parent and not path.endswith(".plan"):
        return f"'{path}' is not a plan file (its name does not end in '.plan'): it is not read"
    if "\x00" in path:
        return f"cannot read '{path}': a file name cannot hold a NUL character"
    real = os.path.realpath(path)
    top = next((t for t in PSEUDO_FILESYSTEMS if real == t or real.startswith(t + "/")), None)
    if top is not None:
        return f"'{path}' is under {top}, a system pseudo-filesystem, not a plan file: it is not read"
    if parent and not real.endswith(".plan"):
        return f"'{path}' links to a file whose name does not end in '.plan': it is not read"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"cannot read '{path}': {exc.strerror}"
    if stat.S_ISDIR(st.st_mode):
        return f"'{path}' is a folder, not a plan file"
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) else "a special file"
        return f"'{path}' is {kind}, not a regular file: it is not read"
    if st.st_size > MAX_PLAN_BYTES:
        return f"'{path}' is {st.st_size / 2**20:.1f} MB, larger than a plan file can be (1 MB): it is not read"
    return None


class _Loader:
    def __init__(self) -> None:
        self.diagnostics: list[Diagnostic] = []
        self.sources: dict[str, str] = {}

    def error(
        self, code: str, message: str, pos: Pos | None, hint: str | None = None, notes: tuple[Note, ...] = ()
    ) -> None:
        self.diagnostics.append(Diagnostic(code, message, pos, hint, notes))

    def read(self, path: str, via: Pos | None) -> str | None:
        data = self.read_bytes(path, via)
        if data is None:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
            self.sources[path] = data.decode("utf-8", errors="replace")
            self.error(
                FILE,
                f"'{path}' is not UTF-8 text (byte {exc.start} cannot be decoded)",
                Pos(path, line, col),
                "plan files are UTF-8 text",
            )
            return None

    def read_bytes(self, path: str, via: Pos | None) -> bytes | None:
        """The file's bytes, or None after reporting why it is not a plan file; nothing is read (or quoted)
        from a file that is not a regular file of at most :data:`MAX_PLAN_BYTES`, nor from an ``extends``
        target whose name does not end in ``.plan``."""
        code = FILE if via is None else EXTENDS
        refusal = _refusal(path, via is not None)
        if refusal == "missing":
            if via:
                self.error(
                    EXTENDS,
                    f"the parent plan '{path}' does not exist",
                    via,
                    "extends takes a path relative to the file that names it",
                )
            else:
                self.error(FILE, f"no such plan file: '{path}'", None)
            return None
        if refusal is not None:
            what = "extends takes" if via else "a plan is"
            self.error(code, refusal, via, f"{what} a regular '.plan' file of at most 1 MB")
            return None
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            with os.fdopen(fd, "rb") as fh:
                data = fh.read(MAX_PLAN_BYTES + 1)
        except OSError as exc:
            self.error(code, f"cannot read '{path}': {exc.strerror}", via)
            return None
        if len(data) > MAX_PLAN_BYTES:
            self.error(code, f"'{path}' is larger than 1 MB: not a plan file", via, "plan files are short text")
            return None
        return data

    def load(self, path: str, text: str | None, chain: tuple[str, ...], via: Pos | None) -> _Merged:
        if text is None:
            text = self.read(path, via)
            if text is None:
                return _Merged(incomplete=True)
        text = text.replace("\r\n", "\n").lstrip("\ufeff")
        self.sources[path] = text
        plan_file, syntax_errors = parse_plan_partial(text, path)
        self.diagnostics += syntax_errors
        statements = plan_file.statements
        parents = [s for s in statements if isinstance(s, ExtendsStmt)]
        for extra in parents[1:]:
            self.error(
                EXTENDS,
                "a plan extends at most one parent",
                extra.pos,
                notes=(Note("the first extends is here", parents[0].pos),),
            )
        merged = _Merged()
        if parents:
            merged = self.load_parent(path, parents[0], chain)
        # a statement that did not parse is missing: checks across statements would report its absence
        merged.incomplete = merged.incomplete or bool(syntax_errors)
        self.apply(merged, statements)
        # a plan is named by its own file, never by its parent's
        merged.name = next((s.name for s in statements if isinstance(s, PlanStmt)), None)
        return merged

    def load_parent(self, path: str, ext: ExtendsStmt, chain: tuple[str, ...]) -> _Merged:
        target = ext.path
        if "\x00" in target:
            self.error(
                EXTENDS,
                "extends path contains a NUL character",
                ext.path_pos,
                "no file name can hold one: check the file's encoding",
            )
            return _Merged(incomplete=True)
        if "://" in target or target.startswith(("~", "$")):
            self.error(
                EXTENDS,
                f"extends takes a file path, not '{target}'",
                ext.path_pos,
                "write a path relative to this file, or an absolute path; URLs, '~' and variables are not expanded",
            )
            return _Merged(incomplete=True)
        parent = os.path.normpath(os.path.join(os.path.dirname(path), target))
        real = os.path.realpath(parent)
        if real in chain:
            self.error(
                EXTENDS,
                f"extends cycle: '{parent}' extends this plan again",
                ext.path_pos,
                "a plan cannot be its own ancestor; remove one of the extends lines",
            )
            return _Merged(incomplete=True)
        if len(chain) >= MAX_EXTENDS_DEPTH:
            self.error(EXTENDS, f"extends chain deeper than {MAX_EXTENDS_DEPTH} plans", ext.path_pos)
            return _Merged(incomplete=True)
        return self.load(parent, None, (*chain, real), ext.path_pos)

    def apply(self, merged: _Merged, statements: tuple[Statement, ...]) -> None:
        seen: dict[tuple[str, str], Pos] = {}

        def first_in_file(kind: str, name: str, pos: Pos, what: str) -> bool:
            if (kind, name) in seen:
                self.error(
                    NAME,
                    f"{what} is given twice in this file",
                    pos,
                    "keep one of them",
                    (Note("first given here", seen[kind, name]),),
                )
                return False
            seen[kind, name] = pos
            return True

        own_watches = False
        for stmt in statements:
            if isinstance(stmt, PlanStmt):
                first_in_file("plan", "", stmt.pos, "the plan name")
            elif isinstance(stmt, StepsStmt):
                if first_in_file("steps", "", stmt.pos, "'steps'"):
                    merged.steps = stmt.steps
            elif isinstance(stmt, LossStmt):
                if first_in_file("loss", stmt.name.text, stmt.name.pos, f"term '{stmt.name.text}'"):
                    self.check_duplicate_keys(stmt.settings)
                    merged.losses[stmt.name.text] = stmt
            elif isinstance(stmt, BlockStmt):
                if first_in_file("block", stmt.name.text, stmt.name.pos, f"block '{stmt.name.text}'"):
                    self.check_duplicate_keys(stmt.settings)
                    self.merge_block(merged, stmt)
            elif isinstance(stmt, StageStmt):
                self.apply_stage(merged, stmt, first_in_file)
            elif isinstance(stmt, WatchStmt):
                if not own_watches:  # a file's watch lines replace those it inherits (as its keep does)
                    merged.watches.clear()
                    own_watches = True
                merged.watches.append(stmt)
            elif isinstance(stmt, KeepStmt) and first_in_file("keep", "", stmt.pos, "'keep best'"):
                merged.keep = stmt  # a child's keep replaces its parent's

    def check_duplicate_keys(self, settings: tuple[Setting, ...]) -> None:
        seen: dict[str, Setting] = {}
        for s in settings:
            if s.key.text in seen:
                self.error(
                    NAME,
                    f"'{s.key.text}' is given twice",
                    s.key.pos,
                    "keep one of them",
                    (Note("first given here", seen[s.key.text].key.pos),),
                )
            seen.setdefault(s.key.text, s)

    def merge_block(self, merged: _Merged, stmt: BlockStmt) -> None:
        name = stmt.name.text
        old = merged.blocks.get(name)
        kind = stmt.kind.text if stmt.kind else None
        given = {s.key.text: s for s in stmt.settings}
        if old is not None and (old[0].kind.text if old[0].kind else None) == kind:
            given = {**old[1], **given}
        merged.blocks[name] = (stmt, given)

    def apply_stage(
        self, merged: _Merged, stmt: StageStmt, first_in_file: Callable[[str, str, Pos, str], bool]
    ) -> None:
        terms: dict[str, TermStmt] = {}
        for term in stmt.terms:
            if term.knob.text in terms:
                self.error(
                    NAME,
                    f"'{term.knob.text}' is set twice in stage {stmt.name.text}",
                    term.pos,
                    "keep one statement per term and stage",
                    (Note("first set here", terms[term.knob.text].pos),),
                )
            terms.setdefault(term.knob.text, term)
        name = stmt.name.text
        if stmt.amend:
            stage = merged.stages.get(name)
            if stage is None and merged.incomplete:
                return  # the stage may be the one that did not parse: its error is reported already
            if stage is None:
                self.error(
                    NAME,
                    f"amend names stage '{name}', which the plan does not have",
                    stmt.name.pos,
                    did_you_mean(name, merged.stages) or "amend changes a stage of the parent plan",
                )
                return
            stage.terms = {**stage.terms, **terms}
            return
        if not first_in_file("stage", name, stmt.name.pos, f"stage '{name}'"):
            return
        assert stmt.start is not None
        merged.stages[name] = _Stage(stmt.name, stmt.start, stmt.end, terms, stmt.pos)

    def apply_overrides(self, merged: _Merged, overrides: Sequence[str]) -> None:
        """``--set NAME.KEY=VALUE``: a key of a settings block or of a loss term, validated like the file.

        Positions point into the pseudo-file ``--set`` whose line N is the N-th override."""
        self.sources[SET_FILE] = "\n".join(overrides)
        for line, item in enumerate(overrides, start=1):
            m = re.fullmatch(r"([A-Za-z_]\w*)\.([A-Za-z_]\w*)=(.*)", item)
            if m is None:
                self.error(
                    VALUE,
                    f"--set '{item}': expected NAME.KEY=VALUE",
                    Pos(SET_FILE, line, 1, len(item)),
                    "for example --set run.seed=3 or --set gan.r1=5",
                )
                continue
            name, key, value = m.groups()
            pos = Pos(SET_FILE, line, 1, len(name))
            setting = Setting(
                Word(key, Pos(SET_FILE, line, len(name) + 2, len(key))),
                value,
                Pos(SET_FILE, line, m.start(3) + 1, max(1, len(value))),
            )
            if name in merged.losses:
                loss = merged.losses[name]
                kept = tuple(s for s in loss.settings if s.key.text != key)
                merged.losses[name] = replace(loss, settings=(*kept, setting))
            elif name in merged.blocks:
                stmt, given = merged.blocks[name]
                merged.blocks[name] = (stmt, {**given, key: setting})
            elif name in BLOCKS:
                kind = DEFAULT_BLOCKS.get(name)
                stmt = BlockStmt(Word(name, pos), Word(kind, pos) if kind else None, (), pos)
                merged.blocks[name] = (stmt, {key: setting})
            else:
                self.error(
                    NAME,
                    f"--set names '{name}', which is neither a settings block nor a term of the plan",
                    pos,
                    did_you_mean(name, [*BLOCKS, *merged.losses]) or "blocks: " + ", ".join(BLOCKS),
                )

    # ---- validation of the merged plan --------------------------------------------------------

    def validate(self, path: str, merged: _Merged) -> PlanSpec | None:
        """The spec, or None when the plan is too broken to compile (syntax errors, no steps).

        Terms or blocks whose settings are invalid are reported and left out of the spec (their
        names are kept in ``invalid_terms``) so that the compiler can still report its own errors.
        """
        fatal = bool(self.diagnostics)
        terms, invalid = self.validate_terms(merged)
        blocks = self.validate_blocks(merged)
        if merged.steps is None and not self.diagnostics:
            self.error(
                VALUE,
                "the plan has no 'steps' line",
                Pos(path, 1, 1),
                "say how long training runs, e.g. 'steps 15k'",
            )
        if not merged.stages and not self.diagnostics:
            self.error(VALUE, "the plan has no stages", Pos(path, 1, 1), "add at least one, e.g. 'stage A 0..: v 1'")
        if fatal or merged.steps is None or not merged.stages:
            return None
        name = merged.name.text if merged.name else Path(path).stem
        stages = [StageDecl(s.name, s.start, s.end, s.terms, s.pos) for s in merged.stages.values()]
        return PlanSpec(
            name,
            path,
            merged.steps,
            terms,
            blocks,
            stages,
            dict(self.sources),
            frozenset(invalid),
            tuple(merged.watches),
            merged.keep,
            frozenset(n for n in merged.blocks if n not in blocks),
        )

    def validate_terms(self, merged: _Merged) -> tuple[dict[str, TermDecl], set[str]]:
        """The loss declarations with valid settings, and the names of those without."""
        terms, invalid = {}, set()
        for name, stmt in merged.losses.items():
            given = {s.key.text: s for s in stmt.settings}
            schema = TERM_KINDS.get(stmt.kind.text)
            if schema is None:
                self.error(
                    NAME,
                    f"unknown loss kind '{stmt.kind.text}'",
                    stmt.kind.pos,
                    did_you_mean(stmt.kind.text, TERM_KINDS) or "kinds: " + ", ".join(TERM_KINDS),
                )
                invalid.add(name)
                continue
            settings = self.validate_settings(
                schema, given, f"loss kind '{stmt.kind.text}'", stmt.kind.pos, f"loss kind {stmt.kind.text}"
            )
            if settings is not None:
                terms[name] = TermDecl(stmt.name, stmt.kind, settings, given, stmt.pos)
            else:
                invalid.add(name)
        return terms, invalid

    def validate_blocks(self, merged: _Merged) -> dict[str, BlockDecl]:
        """The settings blocks with a known name and kind and valid settings."""
        blocks = {}
        for name, (stmt, given) in merged.blocks.items():
            kinds = BLOCKS.get(name)
            if kinds is None:
                self.error(
                    NAME,
                    f"unknown settings block '{name}'",
                    stmt.name.pos,
                    did_you_mean(name, [*BLOCKS, "plan", "steps", "extends", "loss", "stage", "amend"])
                    or "blocks: " + ", ".join(BLOCKS),
                )
                continue
            kind = stmt.kind.text if stmt.kind else None
            at = stmt.kind.pos if stmt.kind else stmt.name.pos
            if kind not in kinds:
                named = [k for k in kinds if k]
                if kind is None:
                    self.error(VALUE, f"block '{name}' needs a kind", at, "kinds: " + ", ".join(named))
                else:
                    self.error(
                        NAME,
                        f"unknown kind '{kind}' for block '{name}'",
                        at,
                        did_you_mean(kind, named)
                        or ("kinds: " + ", ".join(named) if named else f"'{name}' takes only key=value"),
                    )
                continue
            settings = self.validate_settings(kinds[kind], given, f"block '{name}'", at, f"{name} {kind or ''}".strip())
            if settings is not None:
                settings = resolve_paths(kinds[kind], settings, given)
                blocks[name] = BlockDecl(stmt.name, stmt.kind, settings, given, stmt.pos)
        return blocks

    def validate_settings(self, schema: type[M], given: dict[str, Setting], what: str, at: Pos, who: str) -> M | None:
        """The validated settings, or None after reporting every error in the plan's words: a missing key at
        ``at`` (the block's kind), an unknown key at the key, a bad value at the value."""
        empty = [
            k
            for k in path_fields(schema)
            if k in given and isinstance(given[k].value, str) and not given[k].value.strip()
        ]
        for key in empty:  # an empty path would mean the plan's own folder (or the current one for a --set)
            self.error(VALUE, f"'{key}' is empty: it names a file or folder", given[key].value_pos, f"write {key}=PATH")
        if empty:
            return None
        try:
            return schema.model_validate({k: s.value for k, s in given.items()})
        except ValidationError as exc:
            fields = list(schema.model_fields)
            reported: set[str] = set()  # one message per key (a union field fails once per alternative)
            for err in exc.errors():
                key = str(err["loc"][0]) if err["loc"] else ""
                if key in reported:
                    continue
                reported.add(key)
                setting = given.get(key)
                hint: str | None
                if err["type"] == "extra_forbidden" and setting:
                    hint = did_you_mean(key, fields) or (
                        f"{what} takes: " + ", ".join(fields) if fields else f"{what} takes no settings"
                    )
                    self.error(NAME, f"unknown key '{key}' for {what}", setting.key.pos, hint)
                elif setting is None and key in schema.model_fields:
                    message, hint = field_errors.missing_key(schema, key, who)
                    self.error(VALUE, message, at, hint)
                elif setting is None:  # not a field of the schema: a model-level check (none today), at the statement
                    self.error(VALUE, f"{what}: {str(err['msg']).removeprefix('Value error, ')}", at)
                elif key in schema.model_fields and err["type"] == "value_error":  # a check of the field's own
                    why = str(err["msg"]).removeprefix("Value error, ")
                    self.error(VALUE, f"invalid value '{setting.value}' for '{key}': {why}", setting.value_pos)
                elif key in schema.model_fields:
                    message, hint = field_errors.value_error(schema, key, setting.value, err["type"])
                    self.error(VALUE, message, setting.value_pos, hint)
                else:  # a model-level check (none today): pydantic's message, at the statement
                    self.error(VALUE, f"{what}: {str(err['msg']).removeprefix('Value error, ')}", at)
            return None


def load_spec(
    path: str | os.PathLike[str], text: str | None = None, overrides: Sequence[str] = ()
) -> tuple[PlanSpec | None, PlanError | None]:
    """Like :func:`load_plan`, but returns the errors with the spec, so that a caller (the compiler)
    can add its own errors about a spec whose settings were invalid. The spec is None when the
    plan is too broken to go further. ``overrides`` are ``--set NAME.KEY=VALUE`` items."""
    path = os.fspath(path)
    loader = _Loader()
    merged = loader.load(path, text, (os.path.realpath(path),), None)
    if overrides and not loader.diagnostics:
        loader.apply_overrides(merged, overrides)
    spec = loader.validate(path, merged)
    errors = PlanError(loader.diagnostics, loader.sources) if loader.diagnostics else None
    return spec, errors


def load_plan(path: str | os.PathLike[str], text: str | None = None) -> PlanSpec:
    """Read (or take ``text`` for) the plan at ``path``, resolve ``extends``, validate everything.

    Raises :class:`PlanError` with every diagnostic of the plan and its parents.
    """
    spec, errors = load_spec(path, text)
    if errors:
        raise errors
    assert spec is not None
    return spec
