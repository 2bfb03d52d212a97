"""What only a GPU can show: bf16 autocast with a frozen bf16 base, inductor compile, a whole run with
checkpoints and evals on CUDA. Marked ``cuda`` and skipped without one; ``bench/gpu_check.sh`` runs them
(``pytest -m cuda``) on a lent GPU machine."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ditsr_plan.compiler import compile_plan
from ditsr_plan.runtime.run import run_plan
from ditsr_plan.testing import make_pixart, pretrained_plan, tiny_plan, trainer_for

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
STAGES = "stage A 0..2: v 1; latent_l1 1\nstage B 2..: v 1; lpips 0.3; edge 0.05; gan 0.03\n"


def test_a_pretrained_step_in_bf16_trains_the_adapters_and_leaves_the_base_alone(tmp_path):
    folder = make_pixart(tmp_path)
    plan = pretrained_plan(tmp_path, f"model pixart path={folder} lora=4 cond=concat+adapter checkpointing=true")
    trainer = trainer_for(plan, ["run.precision=bf16"], device="cuda")
    frozen = {n: p for n, p in trainer.model.named_parameters() if not p.requires_grad}
    trained = {n: p for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert frozen and all(p.dtype == torch.bfloat16 and p.is_cuda for p in frozen.values())
    assert trained and all(p.dtype == torch.float32 for p in trained.values())  # fp32 master weights
    before = {n: p.detach().clone() for n, p in frozen.items()}
    start = {n: p.detach().clone() for n, p in trained.items()}
    for step in (0, 3):  # stage A, then every term live (decode, LPIPS, D)
        record = trainer.train_step(step, [trainer.data.batch(step)])
        assert not record.nonfinite and all(math.isfinite(v) for v in record.raw.values())
    assert all(torch.equal(before[n], p) for n, p in frozen.items())
    assert any(not torch.equal(start[n], p) for n, p in trained.items())


def test_inductor_compile_matches_eager_and_compiles_once(tmp_path):
    def steps(extra: str):
        folder = tmp_path / ("c" if extra else "e")
        folder.mkdir()
        path = tiny_plan(folder, steps=4, ckpt=4, stages=STAGES)
        path.write_text(path.read_text().replace("keep=5", f"keep=5 precision=fp32 {extra}"))
        trainer = trainer_for(path, device="cuda")
        records = [trainer.train_step(s, [trainer.data.batch(s)]) for s in range(4)]
        return trainer, records

    eager, _ = steps("")
    compiled, records = steps("compile=true compile_backend=inductor")
    assert records[0].dynamo_graphs >= 1 and not any(r.recompiled for r in records)
    a, b = eager.model.state_dict(), compiled.model.state_dict()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-3  # fused kernels round differently


def test_a_run_on_cuda_writes_checkpoints_and_evals(tmp_path):
    plan = tiny_plan(tmp_path / "p", steps=8, ckpt=4, extra="eval every=4 steps=2 size=64\n")
    graph = compile_plan(plan, overrides=["run.device=cuda"])
    run_plan(graph, tmp_path / "run", quiet=True)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["finished"]
    evals = [json.loads(line) for line in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [4, 8] and all(math.isfinite(e["mean"]["psnr"]) for e in evals)
    assert (tmp_path / "run" / "checkpoints" / "step-00000008").is_dir()
