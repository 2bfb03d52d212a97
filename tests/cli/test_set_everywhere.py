"""``--set`` on every command that reads a plan (issue 23), its shape checked before anything heavy."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ditsr_plan.cli import main

DEMO = "plans/demo.plan"


def test_compile_applies_set(capsys):
    assert main(["compile", DEMO, "--set", "run.seed=11"]) == 0
    graph = json.loads(capsys.readouterr().out)
    assert graph["blocks"]["run"]["values"]["seed"] == 11


def test_show_applies_set(capsys):
    assert main(["show", DEMO, "--format", "json", "--set", "optim.lr=0.125"]) == 0
    assert "0.125" in capsys.readouterr().out


def test_show_refuses_set_on_a_run_folder(tmp_path, capsys):
    (tmp_path / "plan.json").write_text("{}")
    assert main(["show", str(tmp_path), "--set", "run.seed=1"]) == 2
    assert "--set changes a plan's settings" in capsys.readouterr().err


def test_diff_sees_a_set(capsys):
    assert main(["diff", DEMO, DEMO, "--set", "run.seed=1"]) == 0  # both sides get it: the same
    capsys.readouterr()
    assert main(["diff", DEMO, "plans/v10.plan", "--set", "steps.x=1", "-q"]) == 2
    assert capsys.readouterr().err.count("--set names 'steps'") == 1  # one mistake, told once for both plans


def test_lint_reports_a_typo_at_the_set(capsys):
    assert main(["lint", DEMO, "--set", "run.sede=1"]) == 2  # bad input on the command line, as show says
    out = capsys.readouterr().out
    assert "--set:1:5" in out and "did you mean 'seed'" in out
    assert "extends this file" not in out  # the --set is not a parent file


@pytest.mark.parametrize("command", ["compile", "show", "lint", "check", "run", "matrix"])
def test_a_malformed_set_is_refused_before_any_heavy_import(command):
    code = (
        "import sys; from ditsr_plan.cli import main; "
        f"rc = main([{command!r}, 'plans/demo.plan', '--set', 'runseed=1']); assert rc == 2, rc; "
        "heavy = {'torch', 'lark', 'pydantic'} & set(sys.modules); assert not heavy, heavy"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--set 'runseed=1': expected NAME.KEY=VALUE" in done.stderr


def test_an_unknown_key_in_run_is_answered_before_torch():
    code = (
        "import sys; from ditsr_plan.cli import main; "
        "rc = main(['run', 'plans/demo.plan', '--set', 'data.bacth=4']); assert rc == 2, rc; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "did you mean 'batch'" in done.stderr


def test_pack_make_applies_set_to_its_plan(tmp_path, capsys):
    assert main(["pack", "make", str(tmp_path), str(tmp_path / "p"), "--set", "data.scale=2"]) == 2
    assert "give the plan with --plan" in capsys.readouterr().err
    assert main(["pack", "make", str(tmp_path), str(tmp_path / "p"), "--plan", DEMO, "--set", "data.sacle=2"]) == 2
    assert "did you mean 'scale'" in capsys.readouterr().err


def test_an_invalid_model_block_is_the_only_error_not_a_cascade(capsys):
    """An invalid model block is left out of the plan; the checks that read the model (dropout_drops=style
    needs the pyramid adapter) do not then judge the default model in its place."""
    reference = "plans/reference/pixart_v10.plan"
    assert main(["lint", reference, "--set", "model.rank=0"]) == 2
    out = capsys.readouterr().out
    assert "unknown key 'rank'" in out and "needs an LR adapter" not in out
    assert main(["lint", reference, "--set", "model.path="]) == 2
    out = capsys.readouterr().out
    assert "--set:1:12: error: 'path' is empty" in out and "needs an LR adapter" not in out


def test_evaluate_tells_when_its_sampler_ends_below_the_trained_timesteps(tmp_path, capsys):
    from ditsr_plan.cli.runs import _eval_settings
    from ditsr_plan.compiler import compile_plan

    (tmp_path / "plan.json").write_text(json.dumps(compile_plan(DEMO).to_json()))  # t_min=900, eval steps=1
    assert _eval_settings(tmp_path, None, None).steps == 1
    assert "never trained there" not in capsys.readouterr().err
    assert _eval_settings(tmp_path, 3, None).steps == 3
    assert "warning: the sampler (3 steps, trailing spacing) ends at timestep 332" in capsys.readouterr().err
    from ditsr_plan.cli.plans import UsageError

    with pytest.raises(UsageError, match="fewer timesteps"):
        _eval_settings(tmp_path, 1001, None)


def test_t_min_at_or_above_the_timesteps_is_an_error_at_t_min(capsys):
    assert main(["lint", DEMO, "--set", "diffusion.train_steps=500"]) == 1  # the plan's t_min is the error
    out = capsys.readouterr().out
    assert "plans/demo.plan:27:59: error: invalid value '900' for 't_min'" in out and "below train_steps=500" in out
