"""DistributedDataParallel on CPU (gloo), two processes started by torchrun, the tiny model.

- both ranks hold identical weights (their digests, gathered at each checkpoint, are in summary.json);
- 2 ranks x batch 1 (accumulating 2 micro-batches) match 1 process x batch 2 within float tolerance:
  generator, EMA and discriminator, and the logged loss of every step. The 2-rank run also compiles the
  generator (aot_eager) and checkpoints its activations, so the speed paths are checked under DDP too;
  the 1-process run is plain eager;
- a 2-process run resumed from a checkpoint continues exactly as the uninterrupted one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ditsr_plan.testing import tiny_plan

STAGES = "stage A 0..2: v 1; latent_l1 1\nstage B 2..: v 1; lpips 0.3; edge 0.05; flat 0.08; ffl 0.01; gan 0.03\n"
ROOT = Path(__file__).resolve().parents[1]


def _plan(folder: Path, batch: int, fast_paths: bool = False) -> Path:
    """The tiny plan with ``batch``; ``fast_paths``: the generator compiled (aot_eager) and checkpointed."""
    folder.mkdir(parents=True, exist_ok=True)
    path = tiny_plan(folder, steps=6, ckpt=3, stages=STAGES, extra="optim accum=2\n")
    text = path.read_text().replace("batch=2", f"batch={batch}")
    if fast_paths:
        text = text.replace("keep=5", "keep=5 compile=true compile_backend=aot_eager")
        text = text.replace("preset=tiny", "preset=tiny checkpointing=true")
    path.write_text(text)
    return path


def _torchrun(plan: Path, out: Path, *extra: str, console_script: bool = False) -> subprocess.CompletedProcess:
    """``torchrun ... -m ditsr_plan run``, or the console script's form ``torchrun ... --no-python ditsr-plan run``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    if console_script:
        cmd += ["--no-python", str(Path(sys.executable).with_name("ditsr-plan"))]
    else:
        cmd += ["-m", "ditsr_plan"]
    cmd += ["run", str(plan), "--out", str(out), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def _tensors(run: Path, step: int, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / "checkpoints" / f"step-{step:08d}" / f"{name}.safetensors")


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _discriminator(run: Path) -> dict[int, dict]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {line["step"]: line["discriminator"]["gan"] for line in lines if line.get("discriminator")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from ditsr_plan.compiler import compile_plan
    from ditsr_plan.runtime.run import run_plan

    tmp = tmp_path_factory.mktemp("ddp")
    two = tmp / "two"
    done = _torchrun(_plan(tmp / "p2", batch=1, fast_paths=True), two)
    one = tmp / "one"
    run_plan(compile_plan(_plan(tmp / "p1", batch=2)), one)
    return tmp, one, two, done


def test_both_ranks_hold_identical_weights(runs):
    _, _, two, done = runs
    ranks = json.loads((two / "summary.json").read_text())["ranks"]
    assert ranks["world"] == 2 and ranks["backend"] == "gloo"
    assert len(ranks["weights_digests"]) == 2
    assert ranks["weights_digests"][0] == ranks["weights_digests"][1]
    assert "DDP: 2 processes (gloo); global batch 4 = 1 per rank x 2 ranks x accum 2" in done.stderr
    assert done.stderr.count("ditsr-plan 0.1.0 · plan tiny") == 1  # rank 1 says nothing
    summary = json.loads((two / "summary.json").read_text())
    assert summary["compile"]["recompiled_at"] == []  # no recompile at the stage change, under DDP either


def test_two_ranks_of_batch_b_match_one_process_of_batch_2b(runs):
    _, one, two, _ = runs
    for step in (3, 6):
        for name in ("generator", "ema", "term-gan-disc"):
            a, b = _tensors(one, step, name), _tensors(two, step, name)
            assert a.keys() == b.keys()
            worst = max(float((a[k] - b[k]).abs().max()) for k in a)
            assert worst < 1e-5, f"{name} after {step} steps differs by {worst}"
    # and the runs did train: the weights moved
    start = _tensors(one, 3, "generator")
    end = _tensors(one, 6, "generator")
    assert max(float((start[k] - end[k]).abs().max()) for k in start) > 2e-4  # 20x the tolerance
    assert _losses(one) == pytest.approx(_losses(two), rel=1e-4, abs=1e-6)
    # the discriminator's logged values are the ranks' means too: those of the whole batch
    d_one, d_two = _discriminator(one), _discriminator(two)
    assert d_one and d_one.keys() == d_two.keys()
    for step, record in d_one.items():
        for key in ("loss", "real", "fake"):
            assert record[key] == pytest.approx(d_two[step][key], rel=1e-4, abs=1e-6), (step, key)


def test_resumed_two_process_run_continues_identically(runs):
    tmp, _, two, _ = runs
    resumed = tmp / "resumed"
    shutil.copytree(two, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-00000006")
    shutil.rmtree(resumed / "final")
    (resumed / "summary.json").unlink()
    done = _torchrun(_plan(tmp / "p2", batch=1, fast_paths=True), resumed, "--resume", console_script=True)
    assert "resuming after step 3" in done.stderr
    for name in ("generator", "ema", "term-gan-disc", "generator-optimizer"):
        a, b = _tensors(two, 6, name), _tensors(resumed, 6, name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert _losses(two) == _losses(resumed)


def _join_with_another_plan(rank: int, port: int, plans: list[str], out: str, results) -> None:
    """One rank of a 2-process group (spawned, gloo) whose ranks compiled different plans."""
    from ditsr_plan.compiler import compile_plan
    from ditsr_plan.runtime.distributed import DistributedError, Ranks
    from ditsr_plan.runtime.run import run_plan

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        run_plan(compile_plan(Path(plans[rank])), Path(out), ranks=Ranks(rank, 2, rank))
        results.put((rank, "no error"))
    except DistributedError as exc:
        results.put((rank, str(exc)))


def test_ranks_that_compiled_different_plans_stop_before_training(tmp_path):
    import socket

    import torch.multiprocessing as mp

    a = _plan(tmp_path / "a", batch=1)
    b = _plan(tmp_path / "b", batch=1)
    b.write_text(b.read_text().replace("lpips 0.3", "lpips 0.4"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_join_with_another_plan, args=(r, port, [str(a), str(b)], str(tmp_path / "run"), results))
        for r in (0, 1)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    said = dict(results.get(timeout=5) for _ in procs)
    for rank in (0, 1):
        assert "the ranks compiled different schedule graphs" in said[rank], said
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_weights_digest_sees_a_one_ulp_difference():
    from ditsr_plan.runtime.distributed import weights_digest

    torch.manual_seed(0)
    a = torch.nn.Linear(8, 8)
    b = torch.nn.Linear(8, 8)
    b.load_state_dict(a.state_dict())
    assert weights_digest([a]) == weights_digest([b])
    with torch.no_grad():
        b.weight[3, 5] = torch.nextafter(b.weight[3, 5], torch.tensor(1.0))
    assert weights_digest([a]) != weights_digest([b])
    with torch.no_grad():  # swapping two values is a different set of weights too
        b.load_state_dict(a.state_dict())
        b.weight[0, 0], b.weight[0, 1] = a.weight[0, 1].clone(), a.weight[0, 0].clone()
    assert weights_digest([a]) != weights_digest([b])


def test_lora_under_ddp_matches_one_process(tmp_path):
    """2 ranks of batch 1 fine-tuning a tiny PixArt with LoRA = 1 process of batch 2: only the trained tensors
    are all-reduced and checkpointed, and they agree."""
    from ditsr_plan.compiler import compile_plan
    from ditsr_plan.runtime.run import run_plan
    from ditsr_plan.testing import make_pixart, pretrained_plan

    base = make_pixart(tmp_path)

    def plan(batch: int) -> Path:
        path = pretrained_plan(tmp_path / f"b{batch}", f"model pixart path={base} lora=4 cond=concat", steps=4, ckpt=4)
        path.write_text(path.read_text().replace("batch=2", f"batch={batch}"))
        return path

    two, one = tmp_path / "two", tmp_path / "one"
    _torchrun(plan(1), two)
    run_plan(compile_plan(plan(2)), one)
    for name in ("generator", "ema"):
        a, b = _tensors(one, 4, name), _tensors(two, 4, name)
        assert a.keys() == b.keys() and all("lora_" in k or "aug_level" in k or "pos_embed.proj" in k for k in a)
        assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
