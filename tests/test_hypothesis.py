"""Hostile plans: whatever the text, the compiler raises nothing but PlanError."""

import os
from pathlib import Path

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

# DITSR_PLAN_FUZZ_EXAMPLES=N examples per test (the --slow mode: e.g. 100000); CI runs the default.
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
