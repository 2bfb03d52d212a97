"""The run report: one self-contained HTML file that renders offline."""

import re
import shutil
import subprocess

import pytest

from ditsr_plan.cli import main
from ditsr_plan.compiler import compile_plan
from ditsr_plan.runtime.run import run_plan
from ditsr_plan.testing import tiny_plan

SECTIONS = [
    "Schedule",
    "Loss per term (raw, unweighted)",
    "Loss per term (weighted)",
    "Weights as logged",
    "Learning rates",
    "Validation metrics",
    "Gradient diagnostics",
    "Discriminator",
    "Validation images",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    plan = tiny_plan(tmp, steps=6, ckpt=3, extra="eval every=3 steps=2 size=64 lpips=off\n")
    out = tmp / "run"
    run_plan(compile_plan(plan), out)
    return out


def test_the_run_writes_a_self_contained_report_with_every_section(run_dir):
    page = (run_dir / "report.html").read_text()
    for title in SECTIONS:
        assert f">{title}</h2>" in page, title
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "lpips: unavailable in this run" in page


def test_report_command(run_dir, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(run_dir), "-o", str(out)]) == 0
    assert out.read_text().startswith("<!doctype html>")
    assert main(["report", str(tmp_path)]) == 2


def test_report_and_compare_of_a_killed_run_skip_a_line_cut_short(run_dir, tmp_path, capsys):
    killed = tmp_path / "killed"
    shutil.copytree(run_dir, killed)
    for name in ("metrics.jsonl", "eval.jsonl"):
        with open(killed / name, "a") as fh:
            fh.write('{"step": 6, "loss": 0.')  # what a SIGKILL mid-write leaves
    assert main(["report", str(killed), "-o", str(tmp_path / "r.html")]) == 0
    assert main(["compare", str(run_dir), str(killed)]) == 0
    assert "internal error" not in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed")
def test_report_renders_offline_in_headless_chromium(run_dir, tmp_path):
    shot = tmp_path / "shot.png"
    result = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,2000",
            (run_dir / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.is_file() and shot.stat().st_size > 20_000, result.stderr[-2000:]
