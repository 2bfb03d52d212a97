"""Hostile and careless input to ``run`` and ``matrix`` (issue #19, items 1, 4 and 13): ``--overwrite`` of a
folder that is not a run folder, a second Ctrl-C, a generator that gives NaN at validation."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ditsr_plan.cli import main
from ditsr_plan.compiler import compile_plan
from ditsr_plan.runtime.run import RunError, run_plan
from ditsr_plan.runtime.run.matrix import run_matrix
from ditsr_plan.testing import folder_bytes, strict_loads, tiny_plan

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[3]


def _data_set(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True)
    for name in ("a.png", "b.png", "c.png", "d.png", "sub/e.png"):
        (folder / name).write_bytes(b"not really a png " + name.encode())
    return folder


# ---- 1. --overwrite clears only run folders -------------------------------------------------------------


def test_overwrite_refuses_a_data_set_and_touches_nothing(tmp_path, capsys):
    data = _data_set(tmp_path / "data" / "DF2K_HR")
    before = folder_bytes(data)
    plan = tiny_plan(tmp_path / "p", steps=2, ckpt=2)
    assert main(["run", str(plan), "--out", str(data), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "is not a run folder of ditsr-plan (holds a.png, b.png, c.png, ...;" in err
    assert "--overwrite clears only run folders; choose another --out" in err and "Traceback" not in err
    assert folder_bytes(data) == before


def test_overwrite_refuses_the_working_directory_even_a_run_folder(tmp_path, monkeypatch, capsys):
    plan = tiny_plan(tmp_path / "p", steps=2, ckpt=2)
    here = _data_set(tmp_path / "work")
    (here / "plan.json").write_text("{}")  # even a folder that looks like a run: it is where we stand
    before = folder_bytes(here)
    monkeypatch.chdir(here)
    assert main(["run", str(plan), "--out", ".", "--overwrite"]) == 2
    assert ". is the working directory: --overwrite clears only run folders" in capsys.readouterr().err
    assert main(["run", str(plan), "--out", "..", "--overwrite"]) == 2
    assert "is the working directory or a folder above it" in capsys.readouterr().err
    assert folder_bytes(here) == before


def test_matrix_overwrite_goes_through_the_same_check(tmp_path):
    graph = compile_plan(tiny_plan(tmp_path / "p", steps=2, ckpt=2))  # plan tiny: runs in OUT/tiny
    data = _data_set(tmp_path / "data" / "tiny")
    before = folder_bytes(data)
    with pytest.raises(RunError, match=r"data/tiny is not a run folder of ditsr-plan \(holds a.png, b.png, c.png"):
        run_matrix([graph], tmp_path / "data", overwrite=True, quiet=True)
    assert folder_bytes(data) == before


# ---- 4. Ctrl-C: the first says what it will do, a second says what it did --------------------------------

SCRIPT = """
import os, signal, sys
from ditsr_plan.cli import main
from ditsr_plan.runtime.train.trainer import Trainer
from ditsr_plan.runtime.run.loop import Run

at, kills, where = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
if where == "step":
    original = Trainer.train_step
    def train_step(self, step, *args, **kwargs):
        if step == at:
            for _ in range(kills):
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, delivered before the next line runs
        return original(self, step, *args, **kwargs)
    Trainer.train_step = train_step
else:
    start = Run.start
    def starting(self, *args):
        os.kill(os.getpid(), signal.SIGINT)
        return start(self, *args)
    Run.start = starting
sys.exit(main(["run", sys.argv[1], "--out", sys.argv[2]]))
"""


def _interrupted(plan: Path, run_dir: Path, at: int, kills: int, where: str = "step") -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("DITSR_PLAN_FAULT", None)
    args = [sys.executable, "-c", SCRIPT, str(plan), str(run_dir), str(at), str(kills), where]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    return done.returncode, done.stderr


@pytest.fixture(scope="module")
def small_plan(tmp_path_factory) -> Path:
    return tiny_plan(tmp_path_factory.mktemp("ctrl-c"), steps=6, ckpt=2, log="every=1 tensorboard=off grads=off")


def test_a_second_ctrl_c_in_the_first_step_says_it_stopped_and_removed_the_folder(small_plan, tmp_path):
    run_dir = tmp_path / "run"
    code, err = _interrupted(small_plan, run_dir, at=0, kills=2)
    assert code == 130, err[-2000:]
    assert "SIGINT received: finishing this step, then writing a checkpoint (a second Ctrl-C stops at once" in err
    assert (
        "second SIGINT: stopped at once after 0 steps, without a checkpoint; the run had not finished its first "
        f"step, so its folder {run_dir} was removed"
    ) in err
    assert "Traceback" not in err and not run_dir.exists()


def test_a_second_ctrl_c_later_keeps_the_folder_and_names_the_checkpoint(small_plan, tmp_path):
    run_dir = tmp_path / "run"
    code, err = _interrupted(small_plan, run_dir, at=3, kills=2)
    assert code == 130, err[-2000:]
    assert "second SIGINT: stopped at once after 3 steps, without a checkpoint;" in err
    assert f"{run_dir} is kept and the newest checkpoint is step-00000002; continue with: ditsr-plan run" in err
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step-*")) == ["step-00000002"]
    assert run_plan(compile_plan(small_plan), run_dir, resume=True, quiet=True).steps_done == 4


def test_one_ctrl_c_finishes_the_step_writes_a_checkpoint_and_says_what_a_second_would_do(small_plan, tmp_path):
    run_dir = tmp_path / "run"
    code, err = _interrupted(small_plan, run_dir, at=0, kills=1)
    assert code == 130, err[-2000:]
    assert "(a second Ctrl-C stops at once, without a checkpoint)" in err
    assert "interrupted after 1 of 6 steps: checkpoint" in err
    assert (run_dir / "checkpoints" / "step-00000001").is_dir()


def test_a_ctrl_c_while_the_run_starts_says_what_it_did(small_plan, tmp_path):
    run_dir = tmp_path / "run"
    code, err = _interrupted(small_plan, run_dir, at=0, kills=1, where="start")
    assert code == 130, err[-2000:]
    assert "SIGINT: stopped at once while the run was starting, without a checkpoint;" in err
    assert f"so its folder {run_dir} was removed" in err and not run_dir.exists()


# ---- 13. a generator that gives NaN at validation ---------------------------------------------------------


def _strict(path: Path) -> list:
    return [strict_loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def nan_at_validation(monkeypatch):
    """The generator gives NaN in validation (sampling) only; training is untouched."""
    from ditsr_plan.runtime.validate import evaluator

    original = evaluator.sample
    monkeypatch.setattr(evaluator, "sample", lambda *a, **k: original(*a, **k) * float("nan"))


def test_a_nan_eval_is_recorded_flagged_and_training_goes_on(tmp_path, nan_at_validation, capsys):
    plan = tiny_plan(tmp_path, steps=4, ckpt=2, extra="eval every=2 steps=2 size=64 lpips=off\n")
    run_dir = tmp_path / "run"
    run_plan(compile_plan(plan), run_dir, quiet=True)
    assert (run_dir / "checkpoints" / "step-00000002").is_dir() and (run_dir / "final").is_dir()
    evals = _strict(run_dir / "eval.jsonl")
    assert [e["step"] for e in evals] == [2, 4]
    assert evals[0]["mean"]["psnr"] == "nan" and evals[0]["images"]["defocus"]["fhr"] == "nan"
    assert evals[0]["flags"][0]["flag"] == "eval_not_finite"
    err = capsys.readouterr().err
    assert "eval after 2 steps: psnr nan (bicubic" in err
    assert "eval after 2 steps: warning: validation after 2 steps: the SR of high_texture, low_texture" in err
    summary = strict_loads((run_dir / "summary.json").read_text())
    assert summary["evals_not_finite"] == [2, 4] and summary["steps"] == 4
    assert any(f["flag"] == "eval_not_finite" for f in summary["flags"])
    report = (run_dir / "report.html").read_text()
    assert "2 flag(s)" in report and "validation after 4 steps: the SR of" in report

    # a resume from before the NaN eval goes through it again
    for gone in (run_dir / "checkpoints" / "step-00000004", run_dir / "final"):
        __import__("shutil").rmtree(gone)
    result = run_plan(compile_plan(plan), run_dir, resume=True, quiet=True)
    assert result.steps_done == 2 and [e["step"] for e in _strict(run_dir / "eval.jsonl")] == [2, 4]


def test_a_watch_stops_a_run_whose_eval_is_nan(tmp_path, nan_at_validation):
    extra = "eval every=2 steps=2 size=64 lpips=off\nwatch psnr < 10 for 1 evals: stop\n"
    run_dir = tmp_path / "run"
    run_plan(compile_plan(tiny_plan(tmp_path, steps=6, ckpt=2, extra=extra)), run_dir, quiet=True)
    summary = strict_loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["stopped_by"]["value"] == "nan"


def test_keep_best_never_ranks_a_nan_eval_first():
    from ditsr_plan.compiler.graph import Keep, MetricName
    from ditsr_plan.runtime.records import EvalRecord
    from ditsr_plan.runtime.run.watch_keep import rank

    keep = Keep(count=1, metric=MetricName(None, "psnr"), direction="max")
    records = [EvalRecord(step=s, images={}, mean={"psnr": v}) for s, v in ((2, 20.0), (4, math.nan), (6, 21.0))]
    assert [r.step for r in rank(keep, records)] == [6, 2, 4]


def test_a_nan_eval_on_a_pack_is_recorded_as_nan_not_left_out(tmp_path, nan_at_validation):
    from PIL import Image

    pack = tmp_path / "pack"
    for sub, size in (("gt", 32), ("lq", 8)):
        (pack / sub).mkdir(parents=True)
        for name in ("a.png", "b.png"):
            Image.new("RGB", (size, size), (100, 20, 20)).save(pack / sub / name)
    extra = f"eval every=2 steps=2 size=32 lpips=off pack={pack}\nkeep best 1 by max pack.psnr\n"
    run_dir = tmp_path / "run"
    run_plan(compile_plan(tiny_plan(tmp_path / "p", steps=2, ckpt=2, extra=extra)), run_dir, quiet=True)
    (record,) = _strict(run_dir / "eval.jsonl")
    assert record["pack"]["mean"]["psnr"] == "nan" and record["pack"]["images"]["b.png"]["ssim"] == "nan"
    assert record["flags"][0]["images"] == [
        "high_texture",
        "low_texture",
        "defocus",
        "pack image a.png",
        "pack image b.png",
    ]
    best = strict_loads((run_dir / "best" / "best.json").read_text())
    assert best["kept"][0]["step"] == 2  # the only checkpoint, kept though its metrics are nan
