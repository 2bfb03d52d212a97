"""Hostile plans: whatever the text, the compiler raises nothing but PlanError, and the command line
answers lint/show/diff with their documented exit codes and positioned messages -- never a traceback."""

import contextlib
import io
import os
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ditsr_plan.compiler import compile_plan
from ditsr_plan.diagnostics import PlanError

PLANS = sorted(Path("plans").rglob("*.plan"))
SOURCES = {p: p.read_text() for p in PLANS}
VOCABULARY = [
    "plan",
    "steps",
    "extends",
    "loss",
    "stage",
    "amend",
    "off",
    "linear",
    "cosine",
    "over",
    "after",
    "->",
    "..",
    ":",
    ";",
    "=",
    "#",
    "\n",
    "\n    ",
    '"',
    "v",
    "lpips",
    "gan",
    "vpred",
    "patchgan",
    "ema",
    "pixel",
    "decay=0.999",
    "patch=64",
    "r1=0",
    "lr",
    "lr_d",
    "0",
    "1",
    "3k",
    "1.5k",
    "0.35",
    "-1",
    "1e400",
    "nan",
    "inf",
    "9" * 30,
    "é",
    "\u202e",
    "\x00",
    '"v10.plan"',
    '"../v10.plan"',
    '"/etc/passwd"',
]
NUMBERS = ["0", "-0", "-5", "1e309", "nan", "inf", "99999999999999999999k", "0.0000001", "1.5", "3k", "0..", "1e-400"]

# DITSR_PLAN_FUZZ_EXAMPLES=N examples per test; `pytest --long-fuzz` sets 50000 (see conftest.py); CI the default.
EXAMPLES = int(os.environ.get("DITSR_PLAN_FUZZ_EXAMPLES", "3400"))  # x 3 tests: over 10,000 in CI
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _compiles_or_plan_error(path: Path, text: str) -> None:
    try:
        graph = compile_plan(path, text=text)
    except PlanError as exc:
        assert exc.diagnostics, "a PlanError must carry at least one diagnostic"
        exc.render()
        return
    for step in (0, graph.total_steps // 2, graph.total_steps - 1):
        graph.weights_at(step)
        graph.live_terms(step)
        graph.needs_at(step)


@SETTINGS
@given(st.text(max_size=300))
def test_random_text(text):
    _compiles_or_plan_error(Path("plans/v10.plan"), text)


@SETTINGS
@given(st.lists(st.sampled_from(VOCABULARY), max_size=60).map(" ".join))
def test_random_token_sequences(text):
    _compiles_or_plan_error(Path("plans/v10.plan"), text)


def _tokens(text: str) -> list[str]:
    import re

    return re.findall(r"\s+|[^\s;:]+|[;:]", text)


@st.composite
def mutated_plan(draw):
    path = draw(st.sampled_from(PLANS))
    tokens = _tokens(SOURCES[path])
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(tokens) - 1))
        action = draw(st.sampled_from(["delete", "duplicate", "swap", "number", "vocabulary", "unicode"]))
        if action == "delete":
            del tokens[i]
        elif action == "duplicate":
            tokens.insert(i, tokens[i])
        elif action == "swap":
            j = draw(st.integers(0, len(tokens) - 1))
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif action == "number":
            tokens[i] = draw(st.sampled_from(NUMBERS))
        elif action == "vocabulary":
            tokens[i] = draw(st.sampled_from(VOCABULARY))
        else:
            tokens[i] = draw(st.text(min_size=1, max_size=4))
        if not tokens:
            tokens = [""]
    return path, "".join(tokens)


@SETTINGS
@given(mutated_plan())
def test_mutated_plans(case):
    path, text = case
    _compiles_or_plan_error(path, text)


# ---- the same hostile input through the command line -------------------------------------------------

CLI_EXAMPLES = max(1, EXAMPLES // 6)
CLI_SETTINGS = settings(max_examples=CLI_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
POSITIONED = re.compile(r"^\S.*:\d+:\d+: (error:|[A-Z]\d{3}) ", re.MULTILINE)


@pytest.fixture(scope="module")
def plans_copy(tmp_path_factory):
    """A copy of plans/, so that a mutated plan sits where its relative ``extends`` resolve."""
    root = tmp_path_factory.mktemp("fuzz") / "plans"
    shutil.copytree("plans", root)
    return root


def _cli(argv: list[str]) -> tuple[int, str, str]:
    from ditsr_plan.cli import main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _cli_answers_cleanly(path: Path, source: Path) -> None:
    """lint: 0 clean, 1 findings (a plan error is a finding); show: 0, or 2 for a plan error; diff: 0 same,
    1 different, 2 a plan error. Every finding and error names its file, line and column."""
    for argv, codes in (
        (["lint", str(path)], {0, 1}),
        (["show", str(path)], {0, 2}),
        (["diff", str(source), str(path)], {0, 1, 2}),
    ):
        code, out, err = _cli(argv)
        assert code in codes, (argv, code, err)
        assert "Traceback" not in err and "internal error" not in err, err
        if code == 2:
            assert POSITIONED.search(err), err
        if argv[0] == "lint" and code == 1:
            assert POSITIONED.search(out), out


@CLI_SETTINGS
@given(case=mutated_plan())
def test_cli_on_mutated_plans_answers_with_its_exit_codes_and_positioned_messages(plans_copy, case):
    path, text = case
    target = plans_copy / path.relative_to("plans").parent / "_fuzz.plan"
    target.write_text(text, encoding="utf-8", errors="surrogatepass")
    _cli_answers_cleanly(target, plans_copy / path.relative_to("plans"))


@CLI_SETTINGS
@given(data=st.binary(max_size=200))
def test_cli_on_random_bytes(plans_copy, data):
    target = plans_copy / "_bytes.plan"
    target.write_bytes(data)
    _cli_answers_cleanly(target, plans_copy / "v10.plan")
