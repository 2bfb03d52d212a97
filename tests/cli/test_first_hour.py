"""A newcomer's first hour (issue 11): each trap found by trying the tool cold, reproduced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ditsr_plan.cli import main

EXE = str(Path(sys.executable).with_name("ditsr-plan"))


def _cli(*args: str, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, timeout=120, input=stdin, env={**os.environ, **(env or {})}
    )


# ---- 1. errors that hide the cause ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "message"),
    [("/definitely/missing", "no such folder"), ("EMPTY", "no config.json in")],
)
def test_a_vae_that_does_not_load_is_named_with_its_cause(tmp_path, path, message):
    if path == "EMPTY":
        (tmp_path / "vae").mkdir()
        path = str(tmp_path / "vae")
    plan = tmp_path / "p.plan"
    plan.write_text(f'extends "{Path("plans/demo.plan").resolve()}"\nplan p\nlatent vae path={path}\n')
    done = _cli("run", str(plan), "--out", str(tmp_path / "run"))
    assert done.returncode == 2
    assert f"error: latent vae path={path}: {message}" in done.stderr and "None" not in done.stderr


def test_a_closed_standard_output_is_not_an_error(tmp_path):
    big = tmp_path / "big.plan"
    stages = "\n".join(f"stage S{i} {i * 10}..{(i + 1) * 10}: v 1; l 0->0.{i % 9 + 1} linear" for i in range(3000))
    big.write_text("plan big\nsteps 30k\nloss v vpred\nloss l latent_l1\n" + stages + "\n")
    done = subprocess.run(f"'{EXE}' show '{big}' | head -1", shell=True, capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("plan big") and done.stderr == ""


# ---- 5. diff and show read compiled graphs and run folders ------------------------------------------


def test_diff_and_show_accept_a_compiled_graph_and_a_run_folder(tmp_path, capsys):
    graph = tmp_path / "g.json"
    assert main(["compile", "plans/demo.plan", "-o", str(graph)]) == 0
    run = tmp_path / "run"
    run.mkdir()
    (run / "plan.json").write_text(graph.read_text())
    capsys.readouterr()
    assert main(["diff", str(graph), "plans/demo.plan"]) == 0
    assert "no difference in meaning" in capsys.readouterr().out
    assert main(["diff", str(run), "plans/v10.plan"]) == 1
    text = capsys.readouterr().out
    assert text.startswith(f"--- {run} (compiled from plans/demo.plan)") and "~ steps: 1.2k -> 15k" in text
    assert main(["show", str(run), "--at", "800"]) == 0
    assert "stage C (720..1.2k)" in capsys.readouterr().out
    assert main(["show", str(tmp_path)]) == 2  # a folder that is not a run folder
    assert "not a run folder" in capsys.readouterr().err


# ---- 7. show says what a plan trains, settings included ----------------------------------------------


def test_show_prints_every_resolved_block_with_defaults_marked(capsys):
    assert main(["show", "plans/demo.plan"]) == 0
    text = capsys.readouterr().out
    assert "settings (* = default, not written in the plan):" in text
    # what the plan writes first, then the defaults (the preset resolved: depth 2)
    model = "  model      dit: preset=tiny heads=4 head_dim=32 patch=1 init=zero lr_context=64 checkpointing=false*"
    assert model + " depth=2*\n" in text
    assert "diffusion  target=residual lr_noise=0 cond_dropout=0 t_min=900 train_steps=1000* beta_schedule=" in text
    assert main(["show", "plans/demo.plan", "--format", "json"]) == 0
    blocks = json.loads(capsys.readouterr().out)["blocks"]
    assert blocks["model"]["kind"] == "dit" and blocks["model"]["values"]["patch"] == 1
    assert "patch" not in blocks["model"]["defaults"] and "depth" in blocks["model"]["defaults"]
    assert set(blocks["run"]["defaults"]) >= {"device", "precision", "threads"}


# ---- 10. fmt ----------------------------------------------------------------------------------------


def test_fmt_accepts_a_bom_keeps_crlf_and_shows_a_diff(tmp_path, capsys):
    path = tmp_path / "bom.plan"
    path.write_bytes(b"\xef\xbb\xbfplan b\r\nsteps   10\r\nloss v vpred\r\nstage A 0..: v 1\r\n")
    assert main(["fmt", "--diff", str(tmp_path)]) == 1
    assert "-steps   10" in capsys.readouterr().out
    assert path.read_bytes().startswith(b"\xef\xbb\xbfplan b\r\nsteps   10")  # --diff changes nothing
    assert main(["fmt", str(tmp_path)]) == 0
    assert path.read_bytes() == b"\xef\xbb\xbfplan b\r\nsteps 10\r\nloss v vpred\r\nstage A 0..: v 1\r\n"
    assert main(["fmt", "--check", str(path)]) == 0


# ---- 11. lint reports each finding once ---------------------------------------------------------------


def test_lint_reports_a_parents_findings_once(capsys):
    assert main(["lint", "plans/", "--format", "json"]) == 1
    findings = json.loads(capsys.readouterr().out)
    keys = [(f["code"], f["file"], f["line"], f["col"]) for f in findings]
    assert len(keys) == len(set(keys))
    # a finding of v9_gan.plan (also reached through v9_gan_edge_gtmask.plan) is reported as its own
    g001 = [f for f in findings if f["code"] == "G001" and f["file"].endswith("v9_gan.plan")]
    assert len(g001) == 1 and g001[0]["notes"] == []


# ---- 14. plots and folders ----------------------------------------------------------------------------


def test_plot_files_are_written_in_the_format_of_their_suffix(tmp_path, capsys):
    for suffix, magic in ((".svg", b"<?xml"), (".pdf", b"%PDF"), (".png", b"\x89PNG")):
        target = tmp_path / f"s{suffix}"
        assert main(["show", "plans/v10.plan", "--plot", str(target)]) == 0
        assert target.read_bytes().startswith(magic)
    with pytest.raises(SystemExit):
        main(["show", "plans/v10.plan", "--plot", str(tmp_path / "s.gif")])


def test_lint_does_not_read_a_folder_named_like_a_plan_and_refuses_one_without_plans(tmp_path, capsys):
    (tmp_path / "adir.plan").mkdir()
    (tmp_path / "ok.plan").write_text("plan ok\nsteps 10\nloss v vpred\nstage A 0..: v 1\n")
    assert main(["lint", str(tmp_path)]) == 0
    assert "1 plan checked" in capsys.readouterr().out
    assert main(["lint", str(tmp_path / "adir.plan")]) == 2
    assert "is a folder with no *.plan file in it" in capsys.readouterr().err


# ---- 15. command-line conventions ---------------------------------------------------------------------


def test_lint_without_a_path_lints_the_current_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "a.plan").write_text("plan a\nsteps 10\nloss v vpred\nstage A 0..: v 1\n")
    monkeypatch.chdir(tmp_path)
    assert main(["lint"]) == 0
    assert "1 plan checked: no findings" in capsys.readouterr().out


def test_a_dash_reads_the_plan_from_standard_input():
    text = Path("plans/v10.plan").read_text()
    done = _cli("show", "-", "--at", "11k", stdin=text)
    assert done.returncode == 0 and "stage C (9k..15k)" in done.stdout
    done = _cli("lint", "-", stdin="plan x\nsteps 10\nloss v vpred\nstage A 0..: v 2k\n")
    assert done.returncode == 1 and "<stdin>:4:" in done.stdout
    done = _cli("fmt", "-", stdin="plan x\nsteps   10\nloss v vpred\nstage A 0..: v 1\n")
    assert done.returncode == 0 and done.stdout.startswith("plan x\nsteps 10\n")


def test_rules_with_a_code_shows_that_rule_only(capsys):
    assert main(["rules", "G001"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("G001 gan-too-strong") and "G002" not in text
    assert main(["rules", "Z9"]) == 2


def test_quiet_and_verbose(capsys):
    assert main(["lint", "-q", "plans/v10.plan"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["lint", "-v", "plans/v10.plan"]) == 0
    assert "checked plans/v10.plan" in capsys.readouterr().err


def test_colour_on_a_terminal_unless_no_color(tmp_path):
    bad = tmp_path / "bad.plan"
    bad.write_text("plan b\nsteps 10\nema decay=2\nloss v vpred\nstage A 0..: v 1\n")
    coloured = _cli("compile", str(bad), env={"FORCE_COLOR": "1"})
    assert "\x1b[1;31merror:\x1b[0m" in coloured.stderr
    plain = _cli("compile", str(bad), env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert "\x1b[" not in plain.stderr and "error: invalid value '2' for 'decay'" in plain.stderr


def test_help_describes_positionals_and_format_values():
    text = _cli("lint", "--help").stdout
    assert "plans, or folders searched for *.plan (default .)" in text
    assert "github: GitHub workflow commands" in text and "sarif: SARIF 2.1.0" in text
    assert "'-' reads a plan from stdin" in _cli("show", "--help").stdout


# ---- 16. show --at keeps its columns -----------------------------------------------------------------


def test_show_at_keeps_its_columns_aligned_with_long_decimals(tmp_path, capsys):
    plan = tmp_path / "d.plan"
    plan.write_text("plan d\nsteps 3\nloss v vpred\nloss a latent_l1\nstage A 0..: v 0.1234567; a 0->0.3333 linear\n")
    assert main(["show", str(plan), "--at", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.endswith("live")]
    assert len(rows) == 2 and len({row.index("live") for row in rows}) == 1


# ---- 2-4, 6, 9: runs that stop and resume ------------------------------------------------------------


def _run_until_progress(args: list[str], sig=None) -> subprocess.CompletedProcess:
    """Start ``ditsr-plan ARGS``, send ``sig`` (SIGINT) at its first progress line, wait for it."""
    import signal

    proc = subprocess.Popen([EXE, *args], stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if " steps (step " in line:
            proc.send_signal(sig or signal.SIGINT)
            break
    lines += proc.stderr.readlines()
    proc.wait(timeout=300)
    proc.stderr.close()
    return subprocess.CompletedProcess(args, proc.returncode, "", "".join(lines))


def test_ctrl_c_during_matrix_is_an_interrupted_run_not_a_bug(tmp_path):
    from ditsr_plan.testing import tiny_plan

    plan = tiny_plan(tmp_path, steps=200, ckpt=100, log="every=50 tensorboard=off")
    done = _run_until_progress(["matrix", str(plan), "--out", str(tmp_path / "m")])
    assert done.returncode == 130, done.stderr[-2000:]
    assert "internal error" not in done.stderr and "interrupted after" in done.stderr
    assert "run the matrix again to continue" in done.stderr
    assert any((tmp_path / "m" / "tiny" / "checkpoints").glob("step-*"))


def test_a_run_that_fails_before_its_first_step_leaves_no_folder(tmp_path):
    out = tmp_path / "run"
    done = _cli("run", "plans/v10.plan", "--out", str(out), env={"TORCH_HOME": str(tmp_path / "empty")})
    assert done.returncode == 2 and "cannot be loaded" in done.stderr
    assert not out.exists()


def test_resume_reuses_the_runs_time_scale_and_settings_and_names_what_differs(tmp_path):
    from ditsr_plan.testing import tiny_plan

    plan = tiny_plan(tmp_path, steps=160, ckpt=40, log="every=20 tensorboard=off")
    run = tmp_path / "run"
    first = _run_until_progress(["run", str(plan), "--out", str(run), "--time-scale", "0.5", "--set", "run.seed=3"])
    assert first.returncode == 130, first.stderr[-2000:]
    command = f"ditsr-plan run {plan} --out {run} --time-scale 0.5 --set run.seed=3 --resume"
    assert f"continue with: {command}" in first.stderr  # the exact command
    # the report of the interrupted run says so
    assert _cli("report", str(run)).returncode == 0
    assert "unfinished: " in (run / "report.html").read_text()
    # a mismatch names what differs
    other = _cli("run", str(plan), "--out", str(run), "--time-scale", "1", "--resume")
    assert other.returncode == 2 and "the time scale: the run's is 0.5, this one 1" in other.stderr
    other = _cli("run", str(plan), "--out", str(run), "--set", "run.seed=4", "--resume")
    assert "the --set overrides: added run.seed=4; missing run.seed=3" in other.stderr
    # the plain resume command continues with the run's own settings, and the summary keeps the first loss
    done = _cli("run", str(plan), "--out", str(run), "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 80 and summary["first_loss"] == lines[0]["loss"] and lines[0]["step"] == 0
    # step numbers: the last line is step 79; the console's last progress line and the checkpoint say 80
    assert lines[-1]["step"] == 79
    assert "80/80 steps (step 79, stage B)" in done.stderr
    assert (run / "checkpoints" / "step-00000080").is_dir()


def test_force_says_where_the_step_lands_in_the_new_schedule(tmp_path):
    from ditsr_plan.testing import tiny_plan

    plan = tiny_plan(tmp_path, steps=400, ckpt=100, log="every=20 tensorboard=off")
    run = tmp_path / "run"
    first = _run_until_progress(["run", str(plan), "--out", str(run), "--time-scale", "0.25"])
    assert first.returncode == 130, first.stderr[-2000:]
    done = _run_until_progress(["run", str(plan), "--out", str(run), "--time-scale", "1", "--resume", "--force"])
    assert "--force: resuming in another schedule (the time scale: the run's is 0.25, this one 1)" in done.stderr
    assert "the run was in stage A of 100 steps; it continues in stage A of 400 steps" in done.stderr


# ---- 8. evaluation under a time scale ---------------------------------------------------------------


def test_eval_spacing_has_a_floor_under_a_time_scale_and_the_eta_counts_evals(capsys):
    from ditsr_plan.compiler import compile_plan
    from ditsr_plan.runtime.run.logs import Progress

    graph = compile_plan("plans/v10.plan", 0.002)  # 30 steps; eval every 1k would be every 2
    assert graph.blocks["eval"].values["every"] == 6  # at most 5 evals
    assert compile_plan("plans/v10.plan").blocks["eval"].values["every"] == 1000  # unscaled: as written
    progress = Progress(total=30, start=0, evals_left=lambda done: (30 - done) // 6, quiet=True)
    progress.evaluated(10.0)  # one eval took 10 s
    assert progress.eta(6) >= 4 * 10.0  # four evals to come


# ---- 18. an unreadable image is named on the console ------------------------------------------------


def test_an_unreadable_image_is_named_on_the_console_once(tmp_path):
    from PIL import Image

    from ditsr_plan.testing import tiny_plan

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 64), (40 * i, 90, 200)).save(images / f"ok{i}.png")
    (images / "broken.png").write_bytes(b"\x89PNG not really")
    plan = tiny_plan(tmp_path, steps=30, ckpt=30)
    plan.write_text(
        plan.read_text().replace(
            "data   builtin crop=32 batch=2 scenes=2", f"data folder root={images} crop=32 batch=2"
        )
    )
    done = _cli("run", str(plan), "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.count("data: skipping unreadable image") == 1 and "broken.png" in done.stderr
