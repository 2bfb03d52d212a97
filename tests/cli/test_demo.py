"""The README's main command: the built-in demo trains through all three stages and visibly learns."""

import itertools
import json
import subprocess
import sys
from pathlib import Path


def test_demo_plan_runs_through_every_stage_and_learns(tmp_path):
    exe = Path(sys.executable).with_name("ditsr-plan")
    out = tmp_path / "demo"
    result = subprocess.run(
        [str(exe), "run", "plans/demo.plan", "--out", str(out)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {line["stage"] for line in lines} == {"A", "B", "C"}
    assert lines[-1]["step"] == 1199 and lines[-1]["terms"]["gan"]["raw"] is not None
    assert (out / "final" / "generator" / "diffusion_pytorch_model.safetensors").is_file()
    assert "stage C 720..1.2k: v, latent_l1, lpips, edge, flat, gan" in result.stderr
    # validation every 200 steps: eval.jsonl with the bicubic baseline, the grids, and the report
    evals = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [200, 400, 600, 800, 1000, 1200]
    assert all((out / "eval" / f"grid-{s:08d}.png").is_file() for s in (200, 600, 1200))
    page = (out / "report.html").read_text()
    assert ">Validation images</h2>" in page and ">Gradient diagnostics</h2>" in page
    # it learns (issue 10, section 6): every eval's mean PSNR(Y) above the previous one; the last within
    # 3 dB of the bicubic baseline, and no texture invented in the defocus image (FHR at most 2)
    psnrs = [e["mean"]["psnr"] for e in evals]
    assert all(b > a for a, b in itertools.pairwise(psnrs)), psnrs
    bicubic = evals[-1]["bicubic"]["mean"]["psnr"]
    assert psnrs[-1] >= bicubic - 3, (psnrs[-1], bicubic)
    assert evals[-1]["images"]["defocus"]["fhr"] <= 2.0
    assert f"(bicubic {bicubic:.2f})" in result.stderr  # the console shows the baseline beside each eval
