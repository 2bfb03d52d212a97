"""Plan text -> syntax tree (:class:`PlanFile`), with every syntax error of the file collected.

A file is split into statements (a line, plus the more-indented lines that continue a stage whose
line ends in ``:`` or ``;``); each statement is parsed on its own with the lark grammar in
``grammar.lark``, so one bad line does not hide the errors of the others.
"""

from __future__ import annotations

from functools import lru_cache

from ditsr_plan.diagnostics import SYNTAX, VALUE, Diagnostic, PlanError, Pos, did_you_mean
from ditsr_plan.dsl.comments import split_comment
from ditsr_plan.dsl.grammar_table import plan_parser
from ditsr_plan.dsl.lark_import import (
    Token,
    Tree,
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
)
from ditsr_plan.dsl.syntax import (
    BlockStmt,
    Chunk,
    Comment,
    ExtendsStmt,
    KeepStmt,
    LossStmt,
    MetricRef,
    PlanFile,
    PlanStmt,
    Setting,
    StageStmt,
    Statement,
    Steps,
    StepsStmt,
    TermStmt,
    WatchStmt,
    Weight,
    Word,
)
from ditsr_plan.settings.numbers import NumberError, parse_steps, parse_weight

KEYWORDS = ("plan", "steps", "extends", "loss", "stage", "amend", "watch", "keep")

USAGE = {
    "plan": "plan NAME",
    "steps": "steps 15k",
    "extends": 'extends "parent.plan"',
    "loss": "loss NAME KIND key=value ...",
    "stage": "stage NAME START..[END]: TERM VALUE; TERM A->B [linear|cosine] [over N] [after N]; ...",
    "amend": "amend stage NAME: TERM VALUE; TERM A->B ...",
    "watch": "watch [IMAGE.]METRIC >|<|>=|<= VALUE [for N evals] [after STEP]: stop|warn",
    "keep": "keep best K by min|max METRIC [where METRIC >= VALUE else min|max METRIC]",
}

TERMINAL_WORDS = {
    "NAME": "name",
    "NUMBER": "number",
    "STRING": 'quoted file name ("parent.plan")',
    "KV": "key=value setting",
    "DOTS": "'..'",
    "COLON": "':'",
    "SEMI": "';'",
    "ARROW": "'->'",
    "SHAPE": "'linear', 'cosine'",
    "OFF": "'off'",
    "OVER": "'over'",
    "AFTER": "'after'",
    "PLAN": "'plan'",
    "STEPS": "'steps'",
    "EXTENDS": "'extends'",
    "LOSS": "'loss'",
    "STAGE": "'stage'",
    "AMEND": "'amend'",
    "WATCH": "'watch'",
    "KEEP": "'keep'",
    "BEST": "'best'",
    "BY": "'by'",
    "FOR": "'for'",
    "EVALS": "'evals'",
    "WHERE": "'where'",
    "ELSE": "'else'",
    "ACTION": "'stop', 'warn'",
    "DIRECTION": "'min', 'max'",
    "CMP": "'>', '<', '>=', '<='",
    "DOT": "'.'",
    "$END": "the end of the statement",
}


Node = Tree[Token]
Kid = Token | Node | None  # a child of a parse tree: a terminal, a sub-rule, or an absent optional part


def _token(kid: Kid) -> Token:
    """A child the grammar makes a terminal."""
    if not isinstance(kid, Token):
        raise AssertionError(f"expected a token of the grammar, got {kid!r}")
    return kid


def _tree(kid: Kid) -> Node:
    """A child the grammar makes a sub-rule."""
    if not isinstance(kid, Tree):
        raise AssertionError(f"expected a sub-rule of the grammar, got {kid!r}")
    return kid


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def parse_plan(text: str, path: str) -> PlanFile:
    """Parse a whole plan file; raise :class:`PlanError` with every syntax error in it."""
    plan_file, diagnostics = parse_plan_partial(text, path)
    if diagnostics:
        raise PlanError(diagnostics, {path: text})
    return plan_file


def parse_plan_partial(text: str, path: str) -> tuple[PlanFile, list[Diagnostic]]:
    """Parse a plan file as far as it goes: the statements that parse, and the errors of those that do not
    (a bad statement is left out; the loader still validates the others, so one mistake does not hide the
    rest). A text is parsed once per process (``lint plans/`` reads a parent for each of its children);
    the syntax tree is immutable."""
    plan_file, diagnostics = _parse_once(text, path)
    return plan_file, list(diagnostics)


@lru_cache(maxsize=64)
def _parse_once(text: str, path: str) -> tuple[PlanFile, tuple[Diagnostic, ...]]:
    lines = text.splitlines()
    codes = [split_comment(line) for line in lines]
    layout: list[Chunk | Comment | None] = []
    statements: list[Statement] = []
    diagnostics: list[Diagnostic] = []
    previous: tuple[str, int, int] | None = None  # the last statement's first word, indentation and line
    i = 0
    while i < len(lines):
        code, comment = codes[i]
        if not code.strip():
            layout.append(Comment(comment.strip(), i + 1) if comment else None)
            i += 1
            continue
        first, indent = i, _indent(lines[i])
        while (
            codes[i][0].rstrip().endswith((":", ";"))
            and i + 1 < len(lines)
            and codes[i + 1][0].strip()
            and _indent(lines[i + 1]) > indent
        ):
            i += 1
        chunk_text = "\n".join(code for code, _ in codes[first : i + 1])
        comments = tuple(Comment(c.strip(), n + 1) for n in range(first, i + 1) if (c := codes[n][1]))
        before = len(diagnostics)
        stmt = _parse_statement(chunk_text, path, first, diagnostics)
        if stmt is None and len(diagnostics) > before and previous is not None:
            diagnostics[before:] = [_after_stage(d, previous, indent) for d in diagnostics[before:]]
        previous = (codes[first][0].split(None, 1)[0], indent, first + 1)
        if stmt is not None:
            statements.append(stmt)
        layout.append(Chunk(stmt, first + 1, i + 1, comments))
        i += 1
    return PlanFile(path=path, text=text, statements=tuple(statements), layout=tuple(layout)), tuple(diagnostics)


def _parse_statement(text: str, path: str, line0: int, out: list[Diagnostic]) -> Statement | None:
    try:
        tree = plan_parser().parse(text)
    except UnexpectedInput as exc:
        out.append(_syntax_diagnostic(exc, text, path, line0))
        return None
    return _Builder(path, line0, out).statement(tree)


def _after_stage(diag: Diagnostic, previous: tuple[str, int, int], indent: int) -> Diagnostic:
    """A more-indented line after a stage whose line does not end in ':' or ';' is a stage statement that
    lost its ';': say so, instead of reading it as a settings line."""
    word, prev_indent, line = previous
    if diag.code != SYNTAX or word not in ("stage", "amend") or indent <= prev_indent:
        return diag
    return Diagnostic(
        SYNTAX,
        f"this indented line reads like the continuation of the stage on line {line}, but that line does not "
        "end in ';'",
        diag.pos,
        f"end line {line} with ';' (a stage continues on more-indented lines only after ':' or ';')",
    )


ARTICLE = {"NAME": "a ", "NUMBER": "a ", "STRING": "a ", "KV": "a "}
KEYWORD_OF = {"SHAPE": ("linear", "cosine"), "OFF": ("off",), "OVER": ("over",), "AFTER": ("after",)}


def _describe_expected(names: set[str]) -> str:
    words = sorted(
        {
            word
            for n in names
            if not n.startswith("__")
            for word in (ARTICLE.get(n, "") + TERMINAL_WORDS.get(n, n)).split(", ")
        }
    )
    if not words:
        return "something else"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _unknown_statement(text: str, path: str, line0: int) -> Diagnostic | None:
    """A statement whose first word is neither a keyword nor a settings block, close to one of them
    (``stgae A 0..:``): the first word is the mistake, not whatever the parser tripped on later."""
    from ditsr_plan.settings.schemas import BLOCKS

    stripped = text.lstrip()
    first_word = stripped.split(None, 1)[0] if stripped else ""
    if not first_word or first_word in KEYWORDS or first_word in BLOCKS:
        return None
    close = did_you_mean(first_word, [*KEYWORDS, *BLOCKS])
    if close is None:
        return None
    col = len(text.splitlines()[0]) - len(text.splitlines()[0].lstrip()) + 1
    return Diagnostic(SYNTAX, f"unknown statement '{first_word}'", Pos(path, line0 + 1, col, len(first_word)), close)


def _syntax_diagnostic(exc: UnexpectedInput, text: str, path: str, line0: int) -> Diagnostic:
    first = text.split(None, 1)[0] if text.strip() else ""
    unknown = None if "=" in first else _unknown_statement(text, path, line0)
    if unknown is not None:
        return unknown
    if "=" in first and first.split("=", 1)[0].isidentifier():
        col = len(text.splitlines()[0]) - len(text.splitlines()[0].lstrip()) + 1
        return Diagnostic(
            SYNTAX,
            f"a line starts with the setting '{first}': settings belong on their block's line",
            Pos(path, line0 + 1, col, len(first)),
            "write the whole block on one line (BLOCK [KIND] key=value ...); only stages continue on indented lines",
        )
    first_word = text.split(None, 1)[0] if text.strip() else ""
    if isinstance(exc, UnexpectedCharacters):
        pos = Pos(path, exc.line + line0, exc.column, 1)
        message = f"unexpected character {exc.char!r}: expected {_describe_expected(set(exc.allowed or ()))}"
    elif isinstance(exc, UnexpectedToken) and exc.token.type != "$END":
        tok = exc.token
        pos = Pos(path, tok.line + line0, tok.column, max(1, len(tok.value)))
        what = TERMINAL_WORDS.get(tok.type, tok.type)
        shown = f"{what} '{tok.value}'" if tok.type in ("NAME", "NUMBER", "KV", "STRING") else f"'{tok.value}'"
        message = f"unexpected {shown}: expected {_describe_expected(set(exc.expected))}"
        keywords = [k for n in exc.expected for k in KEYWORD_OF.get(n, ())]
        close = did_you_mean(str(tok), keywords) if tok.type == "NAME" else None
        if close:
            return Diagnostic(SYNTAX, message, pos, close)
    else:
        expected = exc.expected if isinstance(exc, UnexpectedEOF | UnexpectedToken) else set()
        last = text.rstrip().splitlines() or [""]
        pos = Pos(path, line0 + len(last), len(last[-1]) + 1, 1)
        message = f"the statement ends too early: expected {_describe_expected(set(expected))}"
    if first_word in USAGE:
        hint = f"a '{first_word}' statement reads: {USAGE[first_word]}"
    else:
        hint = did_you_mean(first_word, KEYWORDS) or "a settings line reads: BLOCK [KIND] key=value ..."
    return Diagnostic(SYNTAX, message, pos, hint)


class _Builder:
    """Turns one statement's lark tree into syntax nodes, converting numbers as it goes."""

    def __init__(self, path: str, line0: int, out: list[Diagnostic]):
        self.path, self.line0, self.out = path, line0, out

    def pos(self, kid: Kid) -> Pos:
        tok = _token(kid)
        assert tok.line is not None and tok.column is not None  # lark's lexer places every token it makes
        return Pos(self.path, tok.line + self.line0, tok.column, max(1, len(tok.value)))

    def word(self, tok: Kid) -> Word:
        return Word(str(tok), self.pos(tok))

    def steps(self, kid: Kid) -> Steps | None:
        tok = _token(kid)
        try:
            return Steps(parse_steps(tok), str(tok), self.pos(tok))
        except NumberError as exc:
            self.out.append(Diagnostic(VALUE, exc.message, self.pos(tok), exc.hint))
            return None

    def weight(self, kid: Kid) -> Weight | None:
        tok = _token(kid)
        try:
            return Weight(parse_weight(tok), str(tok), self.pos(tok))
        except NumberError as exc:
            self.out.append(Diagnostic(VALUE, exc.message, self.pos(tok), exc.hint))
            return None

    def metric(self, kid: Kid) -> MetricRef:
        first, _, second = _tree(kid).children
        if second is None:
            return MetricRef(None, self.word(first))
        return MetricRef(self.word(first), self.word(second))

    def number(self, tok: Kid) -> float | None:
        """A threshold: any finite decimal number."""
        try:
            value = float(str(tok)) if str(tok)[-1] not in "kM" else float("nan")
        except ValueError:
            value = float("nan")
        if value != value or value in (float("inf"), float("-inf")):
            self.out.append(Diagnostic(VALUE, f"'{tok}' is not a finite number", self.pos(tok)))
            return None
        return value

    def count(self, tok: Kid) -> int | None:
        """A small whole number >= 1 (how many evals, how many checkpoints)."""
        text = str(tok)
        if not text.isdigit() or int(text) < 1:
            self.out.append(Diagnostic(VALUE, f"'{text}' is not a whole number of 1 or more", self.pos(tok)))
            return None
        return int(text)

    def setting(self, tree: Node) -> Setting:
        tok = _token(tree.children[0])
        key, value = str(tok).split("=", 1)
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        at = self.pos(tok)
        return Setting(
            Word(key, Pos(at.file, at.line, at.col, len(key))),
            value,
            Pos(at.file, at.line, at.col + len(key) + 1, max(1, len(tok) - len(key) - 1)),
        )

    def statement(self, tree: Node) -> Statement | None:
        kids = tree.children
        rule = tree.data
        head = self.pos(kids[0])
        if rule == "plan_stmt":
            return PlanStmt(self.word(kids[1]), head)
        if rule == "steps_stmt":
            steps = self.steps(kids[1])
            return StepsStmt(steps, head) if steps else None
        if rule == "extends_stmt":
            tok = kids[1]
            return ExtendsStmt(str(tok)[1:-1], self.pos(tok), head)
        if rule == "loss_stmt":
            return LossStmt(self.word(kids[1]), self.word(kids[2]), self.settings(kids[3:]), head)
        if rule == "setting_stmt":
            kind = self.word(kids[1]) if kids[1] is not None else None
            return BlockStmt(self.word(kids[0]), kind, self.settings(kids[2:]), head)
        if rule == "stage_stmt":
            _, name, start, _, end, _, terms = kids
            start_steps = self.steps(start)
            end_steps = self.steps(end) if end is not None else None
            if start_steps is None or (end is not None and end_steps is None):
                return None
            return StageStmt(self.word(name), start_steps, end_steps, self.terms(terms), False, head)
        if rule == "amend_stmt":
            return StageStmt(self.word(kids[2]), None, None, self.terms(kids[4]), True, head)
        if rule == "watch_stmt":
            _, metric, op, value, _, evals, _, _, after, _, action = kids
            number = self.number(value)
            count = self.count(evals) if evals is not None else 1
            after_steps = self.steps(after) if after is not None else None
            if number is None or count is None or (after is not None and after_steps is None):
                return None
            return WatchStmt(self.metric(metric), str(op), number, str(value), count, after_steps, str(action), head)
        if rule == "keep_stmt":
            _, _, how_many, _, direction, metric, _, w_metric, w_op, w_value, _, f_direction, f_metric = kids
            k = self.count(how_many)
            where = fallback = None
            if w_metric is not None:
                number = self.number(w_value)
                if number is None:
                    return None
                where = (self.metric(w_metric), str(w_op), number, str(w_value))
                fallback = (str(f_direction), self.metric(f_metric))
            if k is None:
                return None
            return KeepStmt(k, str(direction), self.metric(metric), where, fallback, head)
        raise AssertionError(f"grammar rule without a builder: {rule}")

    def settings(self, kids: list[Token | Node]) -> tuple[Setting, ...]:
        return tuple(self.setting(k) for k in kids if isinstance(k, Tree))

    def terms(self, kid: Kid) -> tuple[TermStmt, ...]:
        if kid is None:
            return ()
        built = [self.term(t) for t in _tree(kid).children if isinstance(t, Tree)]
        return tuple(t for t in built if t is not None)

    def term(self, tree: Node) -> TermStmt | None:
        kids = tree.children
        knob = self.word(kids[0])
        if tree.data == "off":
            return TermStmt(knob, "off")
        if tree.data == "constant":
            value = self.weight(kids[1])
            return TermStmt(knob, "const", value=value) if value else None
        start = self.weight(kids[1]) if kids[1] is not None else None
        end = self.weight(kids[3])
        options: dict[str, Token] = {}
        for kid in kids[4:]:
            opt = _tree(kid)
            name = str(opt.data)
            tok = _token(opt.children[-1])
            if name in options:
                self.out.append(
                    Diagnostic(
                        SYNTAX,
                        f"'{name}' is given twice in one ramp",
                        self.pos(opt.children[0]),
                        f"keep one '{name}'",
                    )
                )
            options[name] = tok
        shape = self.word(options["shape"]) if "shape" in options else None
        over = self.steps(options["over"]) if "over" in options else None
        after = self.steps(options["after"]) if "after" in options else None
        failed = (kids[1] is not None and start is None) or end is None
        failed = failed or ("over" in options and over is None) or ("after" in options and after is None)
        if failed:
            return None
        return TermStmt(knob, "ramp", start=start, end=end, shape=shape, over=over, after=after)
