"""What a run says while it starts and trains (issue 23, "a newcomer's second hour"): a first line before
torch, a word per slow stage, Ctrl-C while loading, progress inside a slow accumulated step, the warm-up
note, an ETA per stage, the watch rules under a time scale, the DataLoader workers capped to the cores."""

from __future__ import annotations

import contextlib
import io
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ditsr_plan.cli import main
from ditsr_plan.testing import tiny_plan

EXE = str(Path(sys.executable).with_name("ditsr-plan"))
WATCH = "eval every=2 steps=2 size=64 lpips=off\nwatch psnr < 100 for 1 evals after 4: stop\n"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> str:
    """One tiny run at time scale 0.5 with 2 micro-batches a step, every console line of it."""
    from ditsr_plan.runtime.run import logs

    root = tmp_path_factory.mktemp("console")
    plan = tiny_plan(root, steps=8, ckpt=100, extra=WATCH)
    mp = pytest.MonkeyPatch()
    mp.setattr(logs, "MICRO_EVERY", 0.0)  # every step counts as slow
    stream = io.StringIO()
    try:
        with contextlib.redirect_stderr(stream):
            rc = main(["run", str(plan), "--out", str(root / "run"), "--time-scale", "0.5", "--set", "optim.accum=2"])
    finally:
        mp.undo()
    text = stream.getvalue()
    assert rc == 0, text
    return text


def test_the_first_lines_come_before_torch_then_a_word_per_stage(smoke_run):
    lines = smoke_run.splitlines()
    assert lines[0].startswith("ditsr-plan run: plan tiny · hash ") and "4 steps (time scale 0.5)" in lines[0]
    words = ["loading torch ...", "reading the data (builtin) ...", "building the model (dit) ...", "building the loss"]
    at = [next(i for i, line in enumerate(lines) if line.startswith(w)) for w in words]
    assert at == sorted(at)


def test_the_first_line_is_printed_without_torch(tmp_path):
    code = (
        "import sys; from ditsr_plan.cli import runs, output; import argparse\n"
        "def stop(*a, **k): raise SystemExit(0 if 'torch' not in sys.modules else 3)\n"
        "runs.Output.info = lambda self, m: (print(m, file=sys.stderr), m.startswith('loading torch') and stop())\n"
        "from ditsr_plan.cli import main; main(['run', 'plans/demo.plan', '--out', sys.argv[1]])\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("ditsr-plan run: plan demo · hash ")


def test_a_slow_accumulated_step_counts_its_micro_batches_and_the_first_is_called_warm_up(smoke_run):
    assert "step 0 comes first: it includes the warm-up" in smoke_run
    assert "step 0: micro-batch 1/2 (" in smoke_run and "the warm-up included" in smoke_run
    assert "step 1: micro-batch 1/2 (" in smoke_run


def test_the_header_says_the_watch_rules_are_scaled_and_the_stop_names_the_rule(smoke_run):
    assert "watch/keep rules are scaled with the steps (time scale 0.5):" in smoke_run
    assert "watch psnr < 100 for 1 evals after 2: stop (" in smoke_run  # after 4 in the plan
    assert "stopped after 2 of 4 steps by the rule 'watch psnr < 100 for 1 evals after 2: stop' at " in smoke_run
    assert "tiny.plan:" in smoke_run.split("stopped after")[1] and "scaled by the time scale 0.5" in smoke_run


def test_the_eta_counts_each_stage_at_its_own_speed():
    from ditsr_plan.runtime.run.logs import Progress

    progress = Progress(total=20, start=0, quiet=True, stages=(("A", 0, 10), ("B", 10, 20)))
    clock = [0.0]
    progress.mark = 0.0
    real = time.perf_counter
    try:
        time.perf_counter = lambda: clock[0]  # type: ignore[assignment]
        for step, seconds in enumerate([9.0, 1.0, 1.0]):  # the first step is the warm-up
            clock[0] += seconds
            progress.update(step, "A", 0.0)
        assert progress.eta(3) == pytest.approx(7 * 1.0 + 10 * 1.0)  # B unseen: the slowest speed seen
        assert progress.eta_text(3) == "ETA >17s (stage B not timed yet)"  # a lower bound, said so
        for step in range(3, 12):
            clock[0] += 1.0 if step < 10 else 4.0  # stage B is 4x slower
            progress.update(step, "A" if step < 10 else "B", 0.0)
        assert progress.eta(12) == pytest.approx(8 * 4.0)
        assert progress.eta_text(12) == "ETA 32s"
        progress.evaluated(30.0)
        progress.evals_left = lambda done: 2
        assert progress.eta(12) == pytest.approx(8 * 4.0 + 2 * 30.0)
    finally:
        time.perf_counter = real  # type: ignore[assignment]


def test_data_workers_are_capped_to_the_cores_with_one_line(monkeypatch, capsys):
    from ditsr_plan.runtime.run import loop

    monkeypatch.setattr(loop, "usable_cores", lambda: [0, 1])
    assert loop.capped_workers(4) == 2 and loop.capped_workers(2) == 0 + 2 and loop.capped_workers(0) == 0
    assert loop.capped_workers(4, processes_here=2) == 1
    err = capsys.readouterr().err
    assert err.count("data: workers=4 capped to") == 2 and "capped to 2, the CPU cores" in err


def test_a_ctrl_c_while_the_run_loads_exits_130_with_a_word(tmp_path):
    proc = subprocess.Popen(
        [EXE, "run", "plans/demo.plan", "--out", str(tmp_path / "run")],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("loading torch"):
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, "".join(seen) + rest
    assert "interrupted (Ctrl-C)" in rest and "Traceback" not in rest


def test_evaluate_counts_its_images_with_an_eta():
    from ditsr_plan.runtime.run.logs import count_eta

    assert count_eta(0, 10, 0.0) == "0/10"
    assert count_eta(3, 10, 30.0) == "3/10 (10.0 s each, ETA 70 s)"
    assert count_eta(10, 10, 50.0).endswith("ETA 0 s)")
