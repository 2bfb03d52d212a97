import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ditsr_plan.cli import main
from ditsr_plan.compiler import ScheduleGraph

FIXTURES = sorted(Path("tests/fixtures/bad").glob("*.plan"))
EXPECT = re.compile(r"#\s*expect:\s*(?:(?P<file>[^:\s]+\.plan):)?(?P<line>\d+):(?P<col>\d+):\s*(?P<message>.+)")


def _expectations(path: Path) -> list[str]:
    out = []
    for line in path.read_text().splitlines():
        if m := EXPECT.match(line):
            file = path.parent / m["file"] if m["file"] else path
            out.append(f"{os.path.normpath(file)}:{m['line']}:{m['col']}: error: {m['message']}")
    return out


def _cli(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("ditsr-plan")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.stem)
def test_bad_plan_fixture(fixture, capsys):
    expected = _expectations(fixture)
    assert expected, f"{fixture} has no '# expect:' line"
    assert main(["compile", str(fixture)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Traceback" not in captured.err
    for line in expected:
        assert line in captured.err, captured.err
    # every error shows the source line with a caret and a hint
    assert "^" in captured.err and "= hint:" in captured.err


def test_fixtures_through_the_console_script():
    for name in ("syntax_error", "overlap", "extends_cycle"):
        result = _cli("compile", f"tests/fixtures/bad/{name}.plan")
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert _expectations(Path(f"tests/fixtures/bad/{name}.plan"))[0] in result.stderr


@pytest.mark.parametrize(
    ("step", "weights", "stage", "needs"),
    [
        (1000, {"v": 1.0, "latent_l1": 1.0, "lpips": 0.0, "edge": 0.0, "flat": 0.0, "gan": 0.0}, "A", (False, False)),
        (6000, {"lpips": 0.175, "edge": 0.03, "flat": 0.04}, "B", (True, False)),
        (9000, {"lpips": 0.35, "edge": 0.06, "flat": 0.08, "gan": 0.0}, "C", (True, False)),
        (11000, {"gan": 0.015, "lpips": 0.4, "flat": 0.09, "edge": 0.06}, "C", (True, True)),
        (14000, {"gan": 0.03, "lpips": 0.45, "flat": 0.1}, "C", (True, True)),
    ],
)
def test_show_at_step_json(step, weights, stage, needs, capsys):
    assert main(["show", "plans/v10.plan", "--at", str(step), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["step"] == step and data["stage"] == stage
    assert set(data["weights"]) == {"v", "latent_l1", "lpips", "edge", "flat", "gan"}
    for name, value in weights.items():
        assert data["weights"][name] == value, name
    assert (data["needs"]["pixel"], data["needs"]["discriminator"]) == needs
    assert data["live"] == [n for n, w in data["weights"].items() if w > 0]


def test_show_through_the_console_script():
    result = _cli("show", "plans/v10.plan", "--at", "11k", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["weights"]["gan"] == 0.015


def test_show_table_plot_and_bad_step(capsys, tmp_path):
    plot = tmp_path / "v10.png"
    assert main(["show", "plans/v10.plan", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "lpips      0          0->0.35 linear" in out
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert main(["show", "plans/v10.plan", "--at", "15k"]) == 2
    assert "the plan has steps 0..14999" in capsys.readouterr().err


def test_compile_writes_a_graph_that_reads_back(tmp_path):
    out = tmp_path / "g.json"
    assert main(["compile", "plans/v10.plan", "--time-scale", "0.1", "-o", str(out)]) == 0
    graph = ScheduleGraph.from_json(json.loads(out.read_text()))
    assert graph.total_steps == 1500 and graph.time_scale == 0.1


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["show", "plans/v10.plan", "--time-scale", "-1"])
    assert exc.value.code == 2
    assert main(["compile", "no/such.plan"]) == 2
    assert "no such plan file" in capsys.readouterr().err


def test_internal_error_is_reported_without_a_traceback(monkeypatch, capsys):
    import ditsr_plan.compiler as compiler

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(compiler, "compile_plan", boom)
    monkeypatch.delenv("DITSR_PLAN_DEBUG", raising=False)
    assert main(["compile", "plans/v10.plan"]) == 2
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: boom" in err and "Traceback" not in err


NO_TORCH = """
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "matplotlib"):
            raise ImportError(f"{name} imported by a command that must not need it")
sys.meta_path.insert(0, Refuse())
from ditsr_plan.cli import main
for args in (["lint", "plans"], ["compile", "plans/v10.plan", "-o", "/dev/null"],
             ["show", "plans/v10.plan", "--at", "5k"], ["diff", "plans/v10.plan", "plans/matrix/exp1.plan"],
             ["fmt", "--check", "plans"]):
    code = main(args)
    assert code in (0, 1), (args, code)
print("ok")
"""


def test_lint_compile_show_diff_fmt_import_no_torch():
    result = subprocess.run([sys.executable, "-c", NO_TORCH], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
