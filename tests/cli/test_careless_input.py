"""Careless input a newcomer met while trying the hostile-input fixes (issue #19, found in review): a run folder
typed without its time, a report written over a file of the user's, a Ctrl-C while a command loads, a factory
module beside the plan, export of a model that has nothing to merge."""

from __future__ import annotations

import pytest
import torch

from ditsr_plan import cli
from ditsr_plan.cli import main
from ditsr_plan.compiler import compile_plan
from ditsr_plan.runtime.errors import RunFailure
from ditsr_plan.runtime.run import run_plan
from ditsr_plan.testing import folder_bytes, pretrained_plan, tiny_plan, trainer_for

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("careless")
    run_dir = tmp / "runs" / "demo-20261128-093000"
    run_plan(compile_plan(tiny_plan(tmp, steps=2, ckpt=2)), run_dir, quiet=True)
    return run_dir


def test_a_run_folder_typed_without_its_time_is_named_with_the_one_that_exists(finished_run, capsys):
    missing = finished_run.parent / "demo"
    for command in (["report", str(missing)], ["compare", str(missing)], ["export", str(missing), "--merge", "x"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"no such folder: {missing}: did you mean {finished_run}?" in err, (command, err)
        assert "is not a run folder" not in err


def test_report_never_replaces_a_file_that_is_not_a_report(finished_run, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    assert main(["report", str(finished_run), "-o", str(notes)]) == 2
    assert "exists and is not a ditsr-plan report: it is left as it is" in capsys.readouterr().err
    assert notes.read_text() == "my notes"
    assert main(["report", str(finished_run), "-o", str(tmp_path / "no" / "r.html")]) == 2
    assert "no such folder" in capsys.readouterr().err
    page = tmp_path / "r.html"
    assert main(["report", str(finished_run), "-o", str(page)]) == 0
    assert main(["report", str(finished_run), "-o", str(page)]) == 0  # its own report is replaced
    assert "<title>ditsr-plan report" in page.read_text()


def test_a_folder_that_is_not_a_run_gets_that_hint_without_overwrite(tmp_path, capsys):
    data = tmp_path / "hr"
    data.mkdir()
    (data / "a.png").write_bytes(b"x")
    assert main(["run", str(tiny_plan(tmp_path, steps=2, ckpt=2)), "--out", str(data)]) == 2
    err = capsys.readouterr().err
    assert "is not a run folder of ditsr-plan (holds a.png; no run.json or plan.json): choose another --out" in err
    assert "--overwrite to start it again" not in err  # which would only have been refused next


def test_a_ctrl_c_while_a_command_loads_says_so(monkeypatch, capsys):
    def interrupted(args, out):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "run", interrupted)
    assert main(["run", "plans/demo.plan"]) == 130
    assert "ditsr-plan run: interrupted (Ctrl-C) before the run started: nothing was written" in capsys.readouterr().err


def test_a_factory_module_beside_the_plan_gets_a_hint(tmp_path):
    (tmp_path / "mymodel_beside_plan.py").write_text("def make(latent_channels, latent_size):\n    return None\n")
    plan = pretrained_plan(tmp_path, "model custom factory=mymodel_beside_plan:make")
    with pytest.raises(RunFailure, match=r"no module named 'mymodel_beside_plan' .* add file=PATH\.py"):
        trainer_for(plan)


def test_export_of_a_custom_model_refuses_before_running_its_code(tmp_path):
    from ditsr_plan.runtime.run.export import _refuse_nothing_to_merge

    marker = tmp_path / "imported"
    (tmp_path / "gen.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    graph = compile_plan(pretrained_plan(tmp_path, "model custom factory=gen_never:make file=gen.py"))
    with pytest.raises(RunFailure, match="model custom: no diffusers transformer to export"):
        _refuse_nothing_to_merge(graph, tmp_path / "final")
    assert not marker.exists()


# ---- found by an attacker's review of the fixes ----------------------------------------------------------------


def test_extends_of_a_plan_named_link_to_another_file_is_refused_unquoted(tmp_path, capsys):
    secret = tmp_path / "credentials"
    secret.write_text("aws_secret_access_key = SECRET-LINE\n")
    (tmp_path / "base.plan").symlink_to(secret)
    child = tmp_path / "child.plan"
    child.write_text('extends "base.plan"\nplan x\n')
    assert main(["lint", str(child)]) == 1  # lint reports a plan error as a finding
    out = capsys.readouterr()
    assert "links to a file whose name does not end in '.plan': it is not read" in out.out + out.err
    assert "SECRET-LINE" not in out.out + out.err


def test_control_characters_of_a_plan_line_never_reach_the_terminal(tmp_path, capsys):
    plan = tmp_path / "ctl.plan"
    plan.write_text("plan x\nsteps 10\nloss v vpred foo=\x1b]0;pwned\x07\x1b[31m1\n")
    for fmt in ("text", "github"):
        main(["lint", str(plan), "--format", fmt])
        out = capsys.readouterr()
        assert "\x1b" not in out.out + out.err and "\x07" not in out.out + out.err, fmt
    main(["lint", str(plan)])
    lines = capsys.readouterr().out.splitlines()
    source = next(line for line in lines if "foo=" in line)
    caret = lines[lines.index(source) + 1]
    assert source[caret.index("^")] == ";"  # the caret still points at the column it names


@pytest.mark.parametrize("factory", ["torch.hub:load", "huggingface_hub:snapshot_download", "x.y:from_pretrained"])
def test_a_factory_that_downloads_is_refused(tmp_path, factory):
    plan = pretrained_plan(tmp_path, f"model custom factory={factory}")
    with pytest.raises(RunFailure, match="downloads code or weights from a hub, and this tool never downloads"):
        trainer_for(plan)


def test_a_file_module_never_replaces_an_installed_one(tmp_path):
    import numpy

    (tmp_path / "gen.py").write_text("def make(latent_channels, latent_size):\n    return None\n")
    plan = pretrained_plan(tmp_path, "model custom factory=numpy:make file=gen.py")
    with pytest.raises(RunFailure, match=r"'numpy' is the name of an installed module.* \(factory=gen:make\)"):
        trainer_for(plan)
    import sys

    assert sys.modules["numpy"] is numpy and hasattr(numpy, "fft")


@pytest.mark.parametrize("damage", ["{bad", "[1, 2]"])
def test_matrix_over_a_damaged_summary_is_a_plain_message(tmp_path, capsys, damage):
    plan = tiny_plan(tmp_path, steps=2, ckpt=2)
    name = compile_plan(plan).name
    (tmp_path / "mx" / name).mkdir(parents=True)
    (tmp_path / "mx" / name / "summary.json").write_text(damage)
    assert main(["matrix", str(plan), "--out", str(tmp_path / "mx")]) == 2
    err = capsys.readouterr().err
    assert "summary.json is damaged" in err and "internal error" not in err


def test_an_overwrite_that_fails_before_its_first_step_puts_the_old_run_back(tmp_path, monkeypatch):
    from ditsr_plan.runtime.train import trainer as trainer_module

    graph = compile_plan(tiny_plan(tmp_path, steps=2, ckpt=2))
    run_dir = tmp_path / "run"
    run_plan(graph, run_dir, quiet=True)
    before = folder_bytes(run_dir)

    def broken(self, step, batches, **kwargs):
        raise RuntimeError("the new run fails in its first step")

    monkeypatch.setattr(trainer_module.Trainer, "train_step", broken)
    with pytest.raises(RuntimeError, match="fails in its first step"):
        run_plan(graph, run_dir, overwrite=True, quiet=True)
    assert folder_bytes(run_dir) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".run.replaced")] == []
    monkeypatch.undo()
    run_plan(graph, run_dir, overwrite=True, quiet=True)  # a new run that does its steps replaces it
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".run.replaced")] == []


def test_a_bomb_above_twice_pillows_limit_gets_the_tools_message(tmp_path):
    """Pillow refuses images above twice its own limit in its own words ("exceeds limit of 178956970 pixels");
    found in review: the tool's limit and its settings must be what the user reads."""
    from PIL import Image

    from ditsr_plan.runtime.train.data import ImageError, read_pixels

    Image.new("1", (20000, 20000)).save(tmp_path / "bomb.png")
    with pytest.raises(ImageError, match=r"20000 x 20000 = 400 MP is above the limit of 100 MP .*max_pixels="):
        read_pixels(tmp_path / "bomb.png")
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's own check is left as it was for everyone else


def test_a_config_json_that_is_a_device_is_named_as_such(tmp_path):
    from ditsr_plan.runtime.train.loading import LoadError, model_folder

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").symlink_to("/dev/zero")
    with pytest.raises(LoadError, match=r"config\.json is not a regular file .*: it is not read"):
        model_folder(str(tmp_path / "model"), None, "model pixart path")


def test_what_the_tool_prints_never_carries_a_control_character(tmp_path, capsys):
    from ditsr_plan.runtime.run.console import say

    say("data: skipping \x1b]0;pwned\x07 (a name)")
    assert capsys.readouterr().err == "data: skipping \\x1b]0;pwned\\x07 (a name)\n"
    folder = tmp_path / "evil\x1b[2Jname"  # a run folder typed (or pasted) with an escape sequence
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "evil\\x1b[2Jname" in err
