"""The one-GPU speed paths, checked for correctness on CPU: ``run compile=true`` (with the aot_eager
backend, which compiles in seconds) and ``model checkpointing=true``."""

from __future__ import annotations

import json

import torch

from ditsr_plan.compiler import compile_plan
from ditsr_plan.runtime.run import run_plan
from ditsr_plan.testing import tiny_plan, trainer_for

torch.set_num_threads(2)
STAGES = "stage A 0..2: v 1; latent_l1 1\nstage B 2..: v 1; lpips 0.3; edge 0.05; gan 0.03\n"


def _weights(run, step: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / "checkpoints" / f"step-{step:08d}" / "generator.safetensors")


def _plan(folder, replace: tuple[str, str] = ("", "")):
    folder.mkdir()
    path = tiny_plan(folder, steps=4, ckpt=4, stages=STAGES)
    path.write_text(path.read_text().replace(*replace))
    return path


COMPILE = ("keep=5", "keep=5 compile=true compile_backend=aot_eager")
CHECKPOINTING = ("preset=tiny", "preset=tiny checkpointing=true")


def test_compiled_run_matches_eager_and_does_not_recompile_when_the_live_set_changes(tmp_path):
    run_plan(compile_plan(_plan(tmp_path / "e")), tmp_path / "eager")
    run_plan(compile_plan(_plan(tmp_path / "c", COMPILE)), tmp_path / "compiled")
    summary = json.loads((tmp_path / "compiled" / "summary.json").read_text())
    # stage A -> B changes the terms around the generator, not the generator's graph: one graph, no recompile
    assert summary["compile"] == {
        "backend": "aot_eager",
        "dynamo_graphs": summary["compile"]["dynamo_graphs"],
        "recompiled_at": [],
    }
    assert summary["compile"]["dynamo_graphs"] >= 1
    lines = [json.loads(line) for line in (tmp_path / "compiled" / "metrics.jsonl").read_text().splitlines()]
    assert all(line["dynamo_graphs"] == summary["compile"]["dynamo_graphs"] for line in lines)
    a, b = _weights(tmp_path / "eager", 4), _weights(tmp_path / "compiled", 4)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6


def test_a_recompile_is_counted_and_reported(tmp_path):
    from ditsr_plan.runtime.train.data import Batch

    trainer = trainer_for(_plan(tmp_path / "c", COMPILE))
    batch = trainer.data.batch(0)
    first = trainer.train_step(0, [batch])
    assert first.dynamo_graphs >= 1 and not first.recompiled
    again = trainer.train_step(1, [batch])
    assert not again.recompiled and again.dynamo_graphs == first.dynamo_graphs
    smaller = trainer.train_step(1, [Batch(batch.hr[:1], batch.lr_up[:1])])  # a new input shape
    assert smaller.recompiled and smaller.dynamo_graphs > first.dynamo_graphs


def test_activation_checkpointing_gives_the_same_step(tmp_path):
    plain = trainer_for(_plan(tmp_path / "a"))
    ckpt = trainer_for(_plan(tmp_path / "b", CHECKPOINTING))
    assert ckpt.model.dit.gradient_checkpointing and not plain.model.dit.gradient_checkpointing
    for trainer in (plain, ckpt):
        trainer.train_step(2, [trainer.data.batch(2)])
    a, b = plain.model.state_dict(), ckpt.model.state_dict()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6
    moved = trainer_for(tmp_path / "a" / "tiny.plan").model.state_dict()  # freshly initialised
    assert max(float((a[k] - moved[k]).abs().max()) for k in a) > 1e-5  # the step did change the weights


def test_auto_threads_honours_omp_num_threads_and_leaves_busy_cores_alone(monkeypatch):
    from ditsr_plan.runtime.train import device

    monkeypatch.setattr(device, "usable_cores", lambda: [0, 1, 2, 3])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert device.auto_threads(busy=0.0) == 4
    assert device.auto_threads(busy=1.2) == 3  # a core kept busy by another program is left to it
    assert device.auto_threads(busy=3.9) == 1  # never fewer than one
    assert device.auto_threads(processes_here=2, busy=0.0) == 2  # torchrun's processes share the cores
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert device.auto_threads(busy=4.0) == 3


def test_busy_cores_sees_a_spinning_process():
    import subprocess
    import sys
    import time

    from ditsr_plan.runtime.train.device import busy_cores

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert busy_cores(0.5) > 0.6
    finally:
        spinner.kill()


def test_a_resumed_run_keeps_the_thread_count_it_started_with(tmp_path, monkeypatch):
    import torch

    from ditsr_plan.compiler import compile_plan
    from ditsr_plan.runtime.run import run_plan
    from ditsr_plan.runtime.train import device

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(device, "auto_threads", lambda processes_here=1, busy=None: 1)
        run_plan(compile_plan(tiny_plan(tmp_path, steps=4, ckpt=2)), tmp_path / "run")
        state = json.loads((tmp_path / "run" / "checkpoints" / "step-00000004" / "state.json").read_text())
        assert state["threads"] == 1
        (tmp_path / "run" / "summary.json").unlink()
        monkeypatch.setattr(device, "auto_threads", lambda processes_here=1, busy=None: 2)
        checkpoints = tmp_path / "run" / "checkpoints"
        import shutil

        shutil.rmtree(checkpoints / "step-00000004")
        run_plan(compile_plan(tiny_plan(tmp_path, steps=4, ckpt=2)), tmp_path / "run", resume=True)
        assert torch.get_num_threads() == 1  # auto on a resumed run: the count the run started with
    finally:
        torch.set_num_threads(before)
