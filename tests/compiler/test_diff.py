import json
from pathlib import Path

from ditsr_plan.cli import main
from ditsr_plan.compiler import compile_plan
from ditsr_plan.compiler.diff import diff_graphs, render_text, to_json


def _diff(a, b):
    return diff_graphs(compile_plan(a), compile_plan(b))


def test_v8_old_to_v8_is_the_ffl_term_and_nothing_else():
    d = _diff("plans/legacy/v8_old.plan", "plans/legacy/v8.plan")
    data = to_json(d)
    assert list(data["terms"]["added"]) == ["ffl"]
    assert data["terms"]["removed"] == {} and data["terms"]["changed"] == {}
    assert list(data["knobs"]) == ["ffl"]
    assert data["knobs"]["ffl"] == [{"start": 0, "end": 20000, "a": "0", "b": "0.1"}]
    assert data["steps"] is None and data["stages"] is None and data["blocks"] == {}


def test_exp1_to_exp2_is_only_the_gan_term():
    d = _diff("plans/matrix/exp1.plan", "plans/matrix/exp2.plan")
    text = render_text(d)
    changes = [line for line in text.splitlines()[2:] if not line.startswith(" ")]
    assert len(changes) == 1 and changes[0].startswith("+ term gan (patchgan): layers=3 ")
    assert list(d.knobs) == ["gan"]
    (change,) = d.knobs["gan"]
    assert (change.start, change.end) == (9000, 15000)
    assert change.b == "0->0.03 linear (9k..13k), 0.03 (13k..15k)"


def test_ramp_moves_are_reported_with_both_shapes():
    d = _diff("plans/legacy/v8_old.plan", "plans/legacy/v9_gan.plan")
    (lpips,) = d.knobs["lpips"]
    assert (lpips.start, lpips.end) == (0, 9500)
    assert lpips.a == "0 (0..4.5k), 0->0.5 linear (4.5k..9.5k)"
    assert lpips.b == "0->0.5 linear (0..5k), 0.5 (5k..9.5k)"
    assert set(d.added) == {"ffl", "gan"}
    assert d.blocks["ema"]["decay"] == (None, 0.999)


def test_settings_steps_and_equal_plans(write_plan):
    a = write_plan("steps 10k\nloss v vpred\nstage A 0..: v 1\n", "a.plan")
    b = write_plan("steps 12k\nloss v vpred formula=eps\nstage A 0..: v 1\n", "b.plan")
    d = diff_graphs(compile_plan(a), compile_plan(b))
    assert d.steps == (10000, 12000)
    assert d.changed_settings == {"v": {"formula": ("v", "eps")}}
    assert [(c.start, c.end, c.a, c.b) for c in d.knobs["v"]] == [(10000, 12000, "0", "1")]
    same = diff_graphs(compile_plan(a), compile_plan(a))
    assert same.same and "no difference in meaning" in render_text(same)


def test_diff_command_exit_codes_json_and_plot(capsys, tmp_path):
    same = tmp_path / "v10-reworded.plan"
    same.write_text("# the same plan, other layout\n" + Path("plans/v10.plan").read_text().replace("  ", " "))
    assert main(["diff", "plans/v10.plan", str(same)]) == 0  # same meaning
    capsys.readouterr()
    plot = tmp_path / "d.png"
    assert (
        main(["diff", "plans/legacy/v8_old.plan", "plans/legacy/v8.plan", "--format", "json", "--plot", str(plot)]) == 1
    )
    data = json.loads(capsys.readouterr().out)
    assert data["same"] is False and list(data["knobs"]) == ["ffl"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
