"""A plan command run as the program tunes the process for a short life (cli._short_lived: the cyclic
collector off, the heap frozen at exit, pydantic's plugins off); called from Python, main changes none
of that; either way the command answers the same."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

from ditsr_plan.cli import main

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
