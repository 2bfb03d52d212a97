"""Faults during training: non-finite steps are skipped (then the run stops), signals checkpoint first."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ditsr_plan.compiler import compile_plan
from ditsr_plan.runtime.run import RunError, run_plan
from ditsr_plan.testing import tiny_plan, tiny_trainer


def test_a_non_finite_step_is_skipped_without_any_update(tmp_path):
    trainer = tiny_trainer(tmp_path, steps=20)
    trainer.train_step(10, [trainer.data.batch(10)])  # the first live steps pass their checks
    real = trainer.terms["edge"].forward
    trainer.terms["edge"].forward = lambda s: real(s) * float("nan")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    ema_before = {k: v.clone() for k, v in trainer.ema.shadow.items()}
    disc_before = {k: v.clone() for k, v in trainer.terms["gan"].disc.state_dict().items()}
    record = trainer.train_step(11, [trainer.data.batch(11)])
    assert record.nonfinite == ["edge"]
    for now, then in (
        (trainer.model.state_dict(), before),
        (trainer.ema.shadow, ema_before),
        (trainer.terms["gan"].disc.state_dict(), disc_before),
    ):
        assert all(torch.equal(v, then[k]) for k, v in now.items())


def test_too_many_non_finite_steps_stop_the_run_naming_the_term(tmp_path, monkeypatch):
    from ditsr_plan.runtime.train.terms.regions import Flat

    real = Flat.forward
    monkeypatch.setattr(Flat, "forward", lambda self, s: real(self, s) * (float("inf") if self._bad else 1.0))
    monkeypatch.setattr(Flat, "_bad", False, raising=False)
    plan = tiny_plan(tmp_path, steps=12, ckpt=2, extra="run seed=7 checkpoint_every=2 keep=5 nan_steps=2\n")
    plan.write_text(plan.read_text().replace("run    seed=7 checkpoint_every=2 keep=5\n", ""))
    graph = compile_plan(plan)

    from ditsr_plan.runtime.train import trainer as trainer_module

    real_step = trainer_module.Trainer.train_step

    def step(self, s, batches, **kwargs):
        Flat._bad = s >= 8
        return real_step(self, s, batches, **kwargs)

    monkeypatch.setattr(trainer_module.Trainer, "train_step", step)
    run_dir = tmp_path / "run"
    with pytest.raises(
        RunError, match=r"2 steps in a row with a non-finite loss or gradient, the last at step 9 \(flat\)"
    ):
        run_plan(graph, run_dir)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 9 and lines[-1]["skipped"] == ["flat"] and lines[-1]["terms"]["flat"]["raw"] == "inf"
    assert (run_dir / "checkpoints" / "step-00000008").is_dir()  # the last good state


def test_sigterm_writes_a_checkpoint_before_exit_and_resume_finishes(tmp_path):
    plan = tiny_plan(tmp_path, steps=400, ckpt=1000, log="every=1 tensorboard=off grads=off")
    run_dir = tmp_path / "run"
    exe = str(Path(sys.executable).with_name("ditsr-plan"))
    proc = subprocess.Popen([exe, "run", str(plan), "--out", str(run_dir)], stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "SIGTERM received" in err and "checkpoint" in err
    done = sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert len(done) == 1
    step = int(done[0][5:])
    assert 3 <= step < 400
    result = run_plan(compile_plan(plan), run_dir, resume=True)
    assert result.steps_done == 400 - step


def test_discriminator_health_flags_collapse_and_explosion_once_per_episode():
    from ditsr_plan.runtime.train.terms.health import DiscriminatorHealth
    from ditsr_plan.settings.schemas import PatchGan

    health = DiscriminatorHealth("gan", PatchGan(d_collapse=0.05, d_explode=10.0, d_patience=3))
    seen = []
    losses = [1.9, 0.01, 0.02, 0.01, 0.01, 0.03, 1.5, 0.01, 0.01, 0.01, 50.0, float("nan"), 20.0, 2.0]
    for step, loss in enumerate(losses):
        seen += [(f["flag"], f["step"]) for f in health.check(step, {"loss": loss})]
    # the collapse streak 1..5 is flagged once (at its 3rd step), the one at 7..9 again, the explosion at 12
    assert seen == [("discriminator_collapse", 3), ("discriminator_collapse", 9), ("discriminator_explode", 12)]


def test_a_diverging_discriminator_is_flagged_in_the_log_summary_and_report(tmp_path, capsys):
    import shutil

    # thresholds that every D step crosses, so the mechanism is exercised in a few steps: D trains from
    # step 2, so the third D step in a row (step 4) raises the flag
    terms = "loss v vpred\nloss gan patchgan layers=2 ndf=8 d_collapse=100 d_patience=3\n"
    plan = tiny_plan(tmp_path, steps=6, ckpt=3, terms=terms, stages="stage A 0..2: v 1\nstage B 2..: v 1; gan 0.03\n")
    run_dir = tmp_path / "run"
    run_plan(compile_plan(plan), run_dir)
    err = capsys.readouterr().err
    assert "step 4: warning: discriminator of 'gan' collapsed" in err
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    flagged = [line for line in lines if line.get("flags")]
    assert [line["step"] for line in flagged] == [4]
    assert flagged[0]["flags"][0]["flag"] == "discriminator_collapse"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [f["step"] for f in summary["flags"]] == [4]
    report = (run_dir / "report.html").read_text()
    assert "<h2>Flags</h2>" in report and "discriminator of &#x27;gan&#x27; collapsed" in report
    # resumed from the checkpoint after step 3 (one D step into the streak), the flag comes at step 4 again
    shutil.rmtree(run_dir / "checkpoints" / "step-00000006")
    run_plan(compile_plan(plan), run_dir, resume=True)
    assert [f["step"] for f in json.loads((run_dir / "summary.json").read_text())["flags"]] == [4]
