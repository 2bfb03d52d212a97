"""Issue #19's acceptance, the run-folder half: a mutation fuzz of a small finished run folder -- one file or
folder truncated, deleted, renamed or corrupted at random -- fed to what ``evaluate``, ``export``,
``compare``, ``report`` and ``run --resume`` call. None may end in an internal error: each case ends with
exit 0 or a plain message (exit 2). Seeded (``DITSR_FUZZ_SEED``), 1,000 cases (``DITSR_FUZZ_CASES``): every
case runs compare, export and resume's checkpoint loading in-process; every 20th evaluate, every 200th
report, every 500th the whole ``run --resume`` (the expensive ones)."""

from __future__ import annotations

import contextlib
import io
import os
import random
import shutil
from pathlib import Path

import pytest
import torch

from ditsr_plan.cli import main
from ditsr_plan.compiler import compile_plan
from ditsr_plan.runtime.errors import RunFailure
from ditsr_plan.runtime.run.invocation import Invocation
from ditsr_plan.runtime.run.resume import refuse_other_schedule, resume
from ditsr_plan.testing import finished_run_and_pack, trainer_for

torch.set_num_threads(1)
CASES = int(os.environ.get("DITSR_FUZZ_CASES", "1000"))
SEED = int(os.environ.get("DITSR_FUZZ_SEED", "19"))
OPS = ("truncate", "delete", "rename", "corrupt")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The finished run (kept pristine), a pack, the plan and one trainer for every resume."""
    root = tmp_path_factory.mktemp("fuzz")
    plan = finished_run_and_pack(root, "pristine")
    return {"root": root, "plan": plan, "graph": compile_plan(plan), "trainer": trainer_for(plan)}


def _mutate(rng: random.Random, run: Path) -> str:
    """One random mutation of one file or folder of ``run``; what was done, in words."""
    paths = sorted(p for p in run.rglob("*") if p.name != "report.html")
    target = rng.choice(paths)
    op = rng.choice(OPS if target.is_file() else ("delete", "rename"))
    if op == "delete":
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    elif op == "rename":
        target.rename(target.with_name(rng.choice([target.name + ".bak", "x" + target.name, "step-00000009"])))
    elif op == "truncate":
        data = target.read_bytes()
        target.write_bytes(data[: rng.randrange(len(data) + 1)] if data else b"")
    else:
        data = bytearray(target.read_bytes() or b"\0")
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        target.write_bytes(bytes(data))
    return f"{op} {target.relative_to(run)}"


def _cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def _resume(world: dict, run: Path) -> None:
    """What ``run --resume`` calls on the run folder before training: run.json, the schedule check, then the
    newest usable checkpoint put back into the trainer."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            invocation = Invocation.load(run)
            refuse_other_schedule(world["graph"], run, invocation)
            resume(world["trainer"], world["graph"], run, False, invocation)
        except RunFailure:
            pass  # a plain message


def test_no_mutation_of_a_run_folder_is_an_internal_error(world, tmp_path, monkeypatch):
    import ditsr_plan.runtime.run.evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "eval_grid", lambda *args, **kwargs: None)  # pictures are not the point
    rng = random.Random(SEED)
    pack, plan = str(world["root"] / "pack"), str(world["plan"])
    failures = []
    for case in range(CASES):
        run = tmp_path / "run"
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(world["root"] / "pristine", run)
        what = _mutate(rng, run)
        commands = [["compare", str(run), "--format", "json"], ["export", str(run), "--merge", str(tmp_path / "x")]]
        if case % 20 == 0:
            out = str(tmp_path / f"ev{case}")
            commands.append(["evaluate", str(run), "--pack", pack, "--limit", "1", "--steps", "1", "--out", out])
        if case % 200 == 0:
            commands.append(["report", str(run)])
        if case % 500 == 0:
            commands.append(["run", plan, "--out", str(run), "--resume", "-q"])
        for argv in commands:
            code, err = _cli(argv)
            if code not in (0, 2) or "internal error" in err or "Traceback" in err:
                failures.append(f"case {case} ({what}): {argv[0]} -> {code}: {err[-400:]}")
        try:
            _resume(world, run)
        except Exception as exc:  # anything but a RunFailure is a bug
            failures.append(f"case {case} ({what}): resume -> {type(exc).__name__}: {exc}")
        shutil.rmtree(tmp_path / "x", ignore_errors=True)
    assert not failures, f"{len(failures)} of {CASES} cases failed:\n" + "\n".join(failures[:20])
