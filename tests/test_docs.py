"""Docs as tests: every command README.md and docs/ show runs, and shows what it prints.

- ``console`` blocks: ``$ COMMAND`` then the output; the shown lines must appear in the real output in
  the same order and next to each other, a ``...`` line standing for any lines; an example that shows
  errors (``error:`` or ``= hint:`` lines) may exit 2;
- ``bash`` blocks: every ``ditsr-plan`` command runs and exits 0 or 1 (findings, differences) -- except the
  long ones listed in ``COVERED_ELSEWHERE`` with the test that runs them;
- ``python`` blocks: executed.

Commands run in a scratch folder holding a copy of ``plans/`` and a compiled ``runs/demo/plan.json``, so
that what they write stays there.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
EXE = str(Path(sys.executable).with_name("ditsr-plan"))

# subcommand (or prefix) -> the test that runs it (minutes of training, or run folders it makes itself)
COVERED_ELSEWHERE = {
    "run": "tests/cli/test_demo.py, tests/runtime/run/",
    "matrix": "tests/runtime/analysis/test_matrix_compare.py",
    "compare": "tests/runtime/analysis/test_matrix_compare.py",
    "report": "tests/runtime/analysis/test_report.py",
    "evaluate": "tests/runtime/validate/test_packs.py",
    "pack": "tests/runtime/validate/test_packs.py",
    "export": "tests/runtime/train/test_pretrained.py",
    "check": "tests/cli/test_check.py (the README's smoke test, on the folders tiny-models writes)",
    "tiny-models": "tests/cli/test_check.py",
    "upscale": "tests/cli/test_upscale.py",
}


def _blocks(language: str) -> list[tuple[str, str]]:
    """(where, text) of every block of ``language`` in the docs."""
    out = []
    for doc in DOCS:
        text = doc.read_text()
        for m in BLOCK.finditer(text):
            if m.group(1) == language:
                line = text[: m.start()].count("\n") + 1
                out.append((f"{doc.relative_to(ROOT)}:{line}", m.group(2)))
    return out


def _commands(block: str) -> list[str]:
    """The ditsr-plan commands of a bash block, continuation lines joined, comments dropped."""
    joined = block.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        code = line.split(" #", 1)[0].strip()
        if code.startswith("ditsr-plan "):
            out.append(code)
    return out


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("docs")
    shutil.copytree(ROOT / "plans", folder / "plans")
    (folder / "runs" / "demo").mkdir(parents=True)
    subprocess.run([EXE, "compile", "plans/demo.plan", "-o", "runs/demo/plan.json"], cwd=folder, check=True)
    return folder


def _run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    args = shlex.split(command)
    assert args[0] == "ditsr-plan", command
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run([EXE, *args[1:]], cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def _shown_in(expected: list[str], actual: list[str]) -> bool:
    """``expected`` (with '...' for any lines) appears in ``actual``, in order, each run of lines adjacent."""
    runs, current = [], []
    for line in expected:
        if line.strip() == "...":
            runs.append(current)
            current = []
        else:
            current.append(line.rstrip())
    runs.append(current)
    actual = [line.rstrip() for line in actual]
    at = 0
    for run in runs:
        if not run:
            continue
        for start in range(at, len(actual) - len(run) + 1):
            if actual[start : start + len(run)] == run:
                at = start + len(run)
                break
        else:
            return False
    return True


CONSOLE = [
    (where, command, lines)
    for where, block in _blocks("console")
    for command, *lines in [block.splitlines()]
    if command.startswith("$ ")
]


@pytest.mark.parametrize(("where", "command", "expected"), CONSOLE, ids=[c[0] for c in CONSOLE])
def test_console_examples_print_what_they_show(scratch, where, command, expected):
    done = _run(command[2:], scratch)
    shows_errors = any("error:" in line or "= hint:" in line for line in expected)  # then it may exit 2
    assert done.returncode in ((0, 1, 2) if shows_errors else (0, 1)), f"{where}: {command}\n{done.stderr}"
    actual = (done.stdout + done.stderr).splitlines()
    assert _shown_in(expected, actual), f"{where}: '{command}' printed\n" + "\n".join(actual[:60])


BASH = [(where, command) for where, block in _blocks("bash") for command in _commands(block)]


@pytest.mark.parametrize(("where", "command"), BASH, ids=[f"{w} {c[:40]}" for w, c in BASH])
def test_commands_shown_run(scratch, where, command):
    sub = shlex.split(command)[1]
    if sub in COVERED_ELSEWHERE:
        pytest.skip(f"'{sub}' runs in {COVERED_ELSEWHERE[sub]}")
    done = _run(command, scratch)
    assert done.returncode in (0, 1), f"{where}: {command}\n{done.stderr}"
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr


PYTHON = _blocks("python")


@pytest.mark.parametrize(("where", "code"), PYTHON, ids=[w for w, _ in PYTHON])
def test_python_examples_run(scratch, where, code, monkeypatch, capsys):
    monkeypatch.chdir(scratch)
    exec(compile(code, where, "exec"), {})


def test_every_runnable_block_is_checked():
    """The docs show commands in console, bash or python blocks (so that this file checks them)."""
    assert CONSOLE and BASH and PYTHON
    for where, block in _blocks(""):
        first = block.lstrip().splitlines()[0] if block.strip() else ""
        assert not first.startswith(("ditsr-plan ", "$ ditsr-plan")), f"{where}: an unlabelled block with a command"


READS_RUNS = {"report", "evaluate", "export", "compare", "show", "diff"}


def _unwritten_runs(commands: list[str]) -> list[str]:
    """Run folders (``runs/...``) that a command reads but no command of the docs writes: ``run --out DIR``
    and ``matrix --out DIR`` write DIR; ``run plans/x.plan`` alone writes ``runs/x-<time>`` (shown as ``<time>``
    or a real time, ``runs/x-20261128-093000``)."""
    written, timed = set(), set()
    parsed = [shlex.split(c) for c in commands]
    for args in parsed:
        if args[1] in ("run", "matrix"):
            out = args[args.index("--out") + 1] if "--out" in args else None
            if out:
                written.add(out.rstrip("/"))
            elif args[1] == "matrix":
                written.add("runs/matrix")
            else:
                timed.add(Path(args[2]).stem)
    bad = []
    for args in parsed:
        if args[1] not in READS_RUNS:
            continue
        for arg in args[2:]:
            if not arg.startswith("runs/") or "<" in arg:
                continue
            folder = arg.rstrip("/")
            stamped = re.fullmatch(r"runs/(.+)-\d{8}-\d{6}", folder)
            if stamped and stamped.group(1) in timed:
                continue
            if not any(folder == w or folder.startswith(w + "/") for w in written):
                bad.append(shlex.join(args))
    return bad


def test_every_run_folder_the_docs_read_is_one_they_write():
    """README's 'evaluate runs/demo' after a 'run' that writes runs/demo-<time> is caught (issue 23)."""
    commands = [c for _, block in _blocks("bash") for c in _commands(block)]
    commands += [command[2:] for _, command, _ in CONSOLE]
    assert _unwritten_runs(commands) == []
    assert _unwritten_runs(["ditsr-plan run plans/demo.plan", "ditsr-plan evaluate runs/demo --pack p"]) == [
        "ditsr-plan evaluate runs/demo --pack p"
    ]
    assert _unwritten_runs(["ditsr-plan run plans/demo.plan --out runs/demo", "ditsr-plan report runs/demo"]) == []
