"""SIGKILL -- no handler, no cleanup, what a node failure or the OOM killer does -- at six points of a
run, five of them placed by the fault-injection hook (``DITSR_PLAN_FAULT=kill@POINT:STEP``, including
two inside a checkpoint write) and one sent from outside at a moment the test does not choose.
After each kill ``--resume`` goes on, and the finished run's weights and logged losses equal those of a
run that was never interrupted, bit for bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ditsr_plan.testing import tiny_plan

ROOT = Path(__file__).resolve().parents[1]
STEPS = 8
# (point, step) in the order one run meets them, each after resuming from the previous kill
CHAIN = [
    ("step", 3),  # between checkpoints: steps 3 is lost, resume from step-2
    ("checkpoint-files", 4),  # mid-write: tensor files written, no manifest
    ("checkpoint-prune", 4),  # checkpoint 4 in place, older ones not yet pruned
    ("checkpoint-manifest", 6),  # complete temporary folder, never renamed into place
    ("final", 8),  # training done, final/ half written
]


def _cmd(plan: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ditsr_plan", "run", str(plan), "--out", str(out), *extra]


def _env(fault: str | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    env.pop("DITSR_PLAN_FAULT", None)
    if fault:
        env["DITSR_PLAN_FAULT"] = fault
    return env


def _run(plan: Path, out: Path, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(plan, out, *extra), capture_output=True, text=True, env=_env(fault), timeout=600)


def _final(run: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for name in ("generator", "generator_ema"):
        out.update(
            {
                f"{name}.{k}": v
                for k, v in load_file(run / "final" / name / "diffusion_pytorch_model.safetensors").items()
            }
        )
    return out


def _losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def _assert_same_run(a: Path, b: Path) -> None:
    import torch

    wa, wb = _final(a), _final(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert _losses(a) == _losses(b)
    assert json.loads((b / "summary.json").read_text())["steps"] == STEPS


@pytest.fixture(scope="module")
def plan_and_baseline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kills")
    plan = tiny_plan(tmp, steps=STEPS, ckpt=2)
    baseline = tmp / "baseline"
    done = _run(plan, baseline)
    assert done.returncode == 0, done.stderr[-3000:]
    return plan, baseline


def test_sigkill_at_five_points_then_resume_gives_the_uninterrupted_run(plan_and_baseline, tmp_path):
    plan, baseline = plan_and_baseline
    run = tmp_path / "run"
    said = []
    for i, (point, step) in enumerate(CHAIN):
        done = _run(plan, run, *(["--resume"] if i else []), fault=f"kill@{point}:{step}")
        said.append(done.stderr)
        assert done.returncode == -signal.SIGKILL, f"{point}:{step} did not kill: {done.stderr[-2000:]}"
        ckpts = run / "checkpoints"
        if point == "checkpoint-files":
            assert list(ckpts.glob(".tmp-step-00000004-*")), "the kill left no partial write to recover from"
            assert not (ckpts / "step-00000004").exists()
        if point == "checkpoint-manifest":
            assert not (ckpts / "step-00000006").exists()
    done = _run(plan, run, "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    # each unfinished write was cleaned up by the next resume, never used
    assert "removed .tmp-step-00000004" in said[2] and "removed .tmp-step-00000006" in said[4]
    assert not list((run / "checkpoints").glob(".tmp-*"))
    _assert_same_run(baseline, run)


def test_sigkill_from_outside_at_an_unchosen_moment(plan_and_baseline, tmp_path):
    plan, baseline = plan_and_baseline
    run = tmp_path / "run"
    proc = subprocess.Popen(_cmd(plan, run), stderr=subprocess.PIPE, text=True, env=_env())
    seen = []
    for line in proc.stderr:  # kill once training is under way, wherever it is then
        seen.append(line)
        if " steps (step " in line:  # a progress line: "1/8 steps (step 0, stage A) ..."
            time.sleep(0.3)
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=120)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    assert not (run / "final").exists()
    done = _run(plan, run, "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_run(baseline, run)
