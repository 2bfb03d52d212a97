"""A plan command run as the program tunes the process for a short life (cli._short_lived: the cyclic
collector off, the heap frozen at exit, pydantic's plugins off); called from Python, main changes none
of that; either way the command answers the same. A plan command line is parsed with the plan commands'
grammar alone."""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ditsr_plan.cli import main
from ditsr_plan.cli.arguments import PLAN_COMMANDS, build_parser

PROBE = (
    "import gc, os, sys; from ditsr_plan.cli import main; sys.argv = ['ditsr-plan', *sys.argv[1:]]; code = main(); "
    "print(gc.isenabled(), os.environ.get('PYDANTIC_DISABLE_PLUGINS'), code)"
)


def _probe(*args: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, timeout=60)
    return done.stdout.splitlines()[-1].split()


def test_a_plan_command_run_as_the_program_is_tuned_for_a_short_life():
    assert _probe("rules", "G001") == ["False", "__all__", "0"]
    assert _probe("compare", "no-such-run") == ["True", "None", "2"]  # not a plan command: left as it is


def test_main_called_from_python_leaves_the_process_alone(monkeypatch, capsys):
    monkeypatch.delenv("PYDANTIC_DISABLE_PLUGINS", raising=False)
    assert main(["rules", "G001"]) == 0
    assert gc.isenabled()
    assert "PYDANTIC_DISABLE_PLUGINS" not in os.environ


def test_cold_lint_answers_the_same_as_the_program_and_from_python(monkeypatch, capsys):
    monkeypatch.setenv("DITSR_PLAN_NO_CACHE", "1")
    code = main(["lint", "plans"])
    captured = capsys.readouterr()
    exe = Path(sys.executable).with_name("ditsr-plan")
    done = subprocess.run([str(exe), "lint", "plans"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (code, captured.out, captured.err)
    assert code == 1 and "F001" in captured.out  # plans/legacy has findings


@pytest.mark.parametrize(
    "line",
    [
        "lint plans --select G001,F001 --format json",
        "compile plans/v10.plan -o /dev/null --time-scale 0.5",
        "show plans/v10.plan --at 11k --set ema.decay=0.99",
        "rules G001",
        "diff plans/v10.plan plans/demo.plan",
        "fmt --check plans",
    ],
)
def test_a_plan_command_line_parses_the_same_with_the_plan_commands_grammar_alone(line):
    words = line.split()
    assert words[0] in PLAN_COMMANDS
    assert vars(build_parser(words[0]).parse_args(words)) == vars(build_parser().parse_args(words))


def test_the_plan_commands_are_what_the_grammar_of_plan_commands_holds():
    (sub,) = [a for a in build_parser("lint")._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) == PLAN_COMMANDS
