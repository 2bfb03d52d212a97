"""Plans are code: hostile ``extends`` targets are refused without being read or quoted, and paths written
in a plan resolve against the plan's own folder (issue #19, items 5 and 7)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ditsr_plan.cli import main
from ditsr_plan.compiler import compile_plan
from ditsr_plan.diagnostics import PlanError
from ditsr_plan.dsl.loader import load_plan

EXE = str(Path(sys.executable).with_name("ditsr-plan"))
SECRET = "ditsr-secret-token-4f1c9e"


def _lint(plan: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [EXE, "lint", str(plan), *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def _child(tmp_path: Path, target: str) -> Path:
    child = tmp_path / "c.plan"
    child.write_text(f'extends "{target}"\nplan c\n')
    return child


# ---- 5. extends takes only a regular .plan file of at most 1 MB --------------------------------------------


def test_extends_of_the_environment_does_not_leak_it(tmp_path):
    """The original input: ``extends "/proc/self/environ"`` printed the whole environment in lint's output."""
    done = _lint(_child(tmp_path, "/proc/self/environ"), "--format", "github", env={"DITSR_TEST_TOKEN": SECRET})
    assert done.returncode in (1, 2) and SECRET not in done.stdout + done.stderr
    assert "line=1,col=9" in done.stdout and "E005" in done.stdout and "is not a plan file" in done.stdout


def test_a_plan_file_symlinked_into_proc_is_not_read(tmp_path):
    (tmp_path / "env.plan").symlink_to("/proc/self/environ")
    done = _lint(_child(tmp_path, "env.plan"), "--format", "github", env={"DITSR_TEST_TOKEN": SECRET})
    assert SECRET not in done.stdout + done.stderr and "pseudo-filesystem" in done.stdout


def test_extends_of_dev_zero_is_refused_without_reading(tmp_path):
    (tmp_path / "zero.plan").symlink_to("/dev/zero")
    for target in ("/dev/zero", "zero.plan"):
        with pytest.raises(PlanError) as exc:
            load_plan(_child(tmp_path, target))
        (diag,) = exc.value.diagnostics
        assert (diag.pos.line, diag.pos.col) == (1, 9) and "it is not read" in diag.message


def test_extends_of_a_fifo_is_refused_and_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "pipe.plan")  # nobody writes to it: opening it for reading would block for ever
    done = _lint(_child(tmp_path, "pipe.plan"))  # subprocess timeout: a hang fails the test
    assert "'" + str(tmp_path / "pipe.plan") + "' is a FIFO, not a regular file" in done.stderr + done.stdout


def test_extends_of_a_huge_plan_is_refused_without_quoting_it(tmp_path):
    (tmp_path / "big.plan").write_text(("# " + SECRET + "\n") * 70_000)  # 2 MB
    with pytest.raises(PlanError) as exc:
        load_plan(_child(tmp_path, "big.plan"))
    (diag,) = exc.value.diagnostics
    assert "larger than a plan file can be (1 MB)" in diag.message and diag.pos.line == 1
    assert SECRET not in str(exc.value) and all(SECRET not in t for t in exc.value.sources.values())


def test_extends_of_a_file_that_is_not_a_plan_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text(f"token = {SECRET}\n")
    with pytest.raises(PlanError) as exc:
        load_plan(_child(tmp_path, "notes.txt"))
    (diag,) = exc.value.diagnostics
    assert "its name does not end in '.plan'" in diag.message and SECRET not in str(exc.value)


# ---- 7. relative paths resolve against the plan's folder ------------------------------------------------------

PLAN = """plan p
steps 100
loss v vpred
model custom factory=gen:make file=gen.py
data folder root=hr crop=32
eval every=50 images=a=img/a.png,b=/abs/b.png pack=../packs/p
stage A 0..: v 1
"""


def test_relative_paths_resolve_against_the_plans_folder_not_the_current_one(tmp_path, monkeypatch):
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "p.plan").write_text(PLAN)
    monkeypatch.chdir(tmp_path)  # the user stands elsewhere: today file=gen.py ran ./gen.py of this folder
    blocks = compile_plan("exp/p.plan").blocks
    assert blocks["model"].values["file"] == str(folder / "gen.py")
    assert blocks["data"].values["root"] == str(folder / "hr")
    assert blocks["eval"].values["pack"] == str(tmp_path / "packs" / "p")
    assert blocks["eval"].values["images"] == f"a={folder / 'img' / 'a.png'},b=/abs/b.png"


def test_the_graph_is_the_same_from_any_current_folder(tmp_path, monkeypatch):
    (tmp_path / "p.plan").write_text(PLAN)
    (tmp_path / "elsewhere").mkdir()
    first = compile_plan(tmp_path / "p.plan")
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert compile_plan(os.path.relpath(tmp_path / "p.plan")).hash == first.hash


def test_a_parents_paths_resolve_against_the_parents_folder(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "b.plan").write_text(PLAN)
    (tmp_path / "c.plan").write_text('extends "base/b.plan"\nplan c\ndata folder crop=64\n')
    values = compile_plan(tmp_path / "c.plan").blocks["data"].values
    assert values["root"] == str(tmp_path / "base" / "hr") and values["crop"] == 64


def test_set_paths_resolve_against_the_current_folder(tmp_path, monkeypatch):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "p.plan").write_text(PLAN)
    monkeypatch.chdir(tmp_path)
    graph = compile_plan("exp/p.plan", overrides=["data.root=mine", "model.file=tools/g.py"])
    assert graph.blocks["data"].values["root"] == str(tmp_path / "mine")
    assert graph.blocks["model"].values["file"] == str(tmp_path / "tools" / "g.py")


def test_keywords_are_not_paths(tmp_path):
    text = "plan p\nsteps 100\nloss v vpred\nmodel pixart path=m caption=null\neval images=builtin\nstage A 0..: v 1\n"
    (tmp_path / "p.plan").write_text(text)
    blocks = compile_plan(tmp_path / "p.plan").blocks
    assert blocks["model"].values["caption"] == "null" and blocks["eval"].values["images"] == "builtin"
    assert blocks["model"].values["path"] == str(tmp_path / "m")


def test_show_prints_resolved_paths_and_the_code_a_plan_runs(tmp_path, capsys):
    (tmp_path / "p.plan").write_text(PLAN)
    assert main(["show", str(tmp_path / "p.plan")]) == 0
    out = capsys.readouterr().out
    assert f"data.root    {tmp_path / 'hr'}" in out and f"model.file   {tmp_path / 'gen.py'}" in out
    assert f"{tmp_path / 'p.plan'}:4: model custom file={tmp_path / 'gen.py'} executes that Python file" in out
    assert main(["show", str(tmp_path / "p.plan"), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["paths"]["data.root"] == str(tmp_path / "hr") and len(data["code"]) == 2


def test_lint_names_the_code_a_plan_runs_at_its_position(tmp_path, capsys):
    (tmp_path / "p.plan").write_text(PLAN)
    assert main(["lint", str(tmp_path / "p.plan"), "--select", "X"]) == 1
    out = capsys.readouterr().out
    assert ":4:14: X001 this plan runs code: model custom factory=gen:make calls make()" in out
    assert f":4:31: X001 this plan runs code: model custom file={tmp_path / 'gen.py'} executes" in out


def test_the_shipped_plans_still_compile(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # from anywhere
    root = Path(__file__).resolve().parents[2]
    for plan in sorted((root / "plans").rglob("*.plan")):
        compile_plan(plan)
