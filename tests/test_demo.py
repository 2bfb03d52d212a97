"""The README's main command: the built-in demo trains through all three stages and learns."""

import json
import subprocess
import sys
import time
from pathlib import Path


def test_demo_plan_runs_through_every_stage_and_its_loss_falls(tmp_path):
    exe = Path(sys.executable).with_name("ditsr-plan")
    out = tmp_path / "demo"
    started = time.perf_counter()
    result = subprocess.run(
        [str(exe), "run", "plans/demo.plan", "--out", str(out)], capture_output=True, text=True, timeout=600
    )
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-3000:]
    assert elapsed < 300, f"the demo took {elapsed:.0f} s; it must finish in under 5 minutes"
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {line["stage"] for line in lines} == {"A", "B", "C"}
    assert lines[-1]["step"] == 599 and lines[-1]["terms"]["gan"]["raw"] is not None
    # the reconstruction terms (always live, constant weight) fall from the first fifth to the last
    recon = [line["terms"]["v"]["raw"] + line["terms"]["latent_l1"]["raw"] for line in lines]
    n = len(recon) // 5
    assert sum(recon[-n:]) / n < 0.85 * sum(recon[:n]) / n
    assert (out / "final" / "generator" / "diffusion_pytorch_model.safetensors").is_file()
    assert "stage C 360..600: v, latent_l1, lpips, edge, flat, gan" in result.stderr
    # validation every 200 steps: eval.jsonl, the grids, and the report
    evals = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [200, 400, 600]
    assert all((out / "eval" / f"grid-{s:08d}.png").is_file() for s in (200, 400, 600))
    page = (out / "report.html").read_text()
    assert ">Validation images</h2>" in page and ">Gradient diagnostics</h2>" in page
