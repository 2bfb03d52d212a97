"""parse -> fmt -> parse keeps the meaning (same graph hash) and fmt is idempotent."""

from pathlib import Path

import pytest

from ditsr_plan.cli import main
from ditsr_plan.compiler import compile_plan
from ditsr_plan.dsl.formatter import format_plan
from ditsr_plan.dsl.parser import parse_plan

PLANS = sorted(str(p) for p in Path("plans").rglob("*.plan"))


def _strip_positions(plan):
    from dataclasses import fields, is_dataclass

    from ditsr_plan.diagnostics import Pos

    def strip(node):
        if isinstance(node, Pos):
            return None
        if is_dataclass(node):
            return tuple((f.name, strip(getattr(node, f.name))) for f in fields(node) if f.name not in ("pos",))
        if isinstance(node, tuple | list):
            return tuple(strip(n) for n in node)
        return node

    return strip([s for s in plan.statements])


@pytest.mark.parametrize("path", PLANS)
def test_round_trip_keeps_the_hash(path):
    text = Path(path).read_text()
    formatted = format_plan(parse_plan(text, path))
    assert compile_plan(path, text=formatted).hash == compile_plan(path).hash
    assert format_plan(parse_plan(formatted, path)) == formatted  # idempotent


@pytest.mark.parametrize("path", PLANS)
def test_plans_in_the_repository_are_formatted(path):
    assert format_plan(parse_plan(Path(path).read_text(), path)) == Path(path).read_text()


MESSY = """  # a comment
plan   messy


steps 9k
loss a   vpred    min_snr=5
  loss bbb latent_l1
emma_is_not_checked_by_fmt x=1
stage A 0..3k:   a 1;   bbb 0 -> 1 linear after 100 over 500 ;
      bbb2 off   # trailing
stage BB 3k..: a ->2 cosine  # noqa: W001
"""

EXPECTED = """# a comment
plan messy

steps 9k
loss a   vpred     min_snr=5
loss bbb latent_l1
emma_is_not_checked_by_fmt x=1
stage A 0..3k: a 1; bbb 0->1 linear over 500 after 100;
    bbb2 off  # trailing
stage BB 3k..: a ->2 cosine  # noqa: W001
"""


def test_canonical_layout_keeps_comments_on_their_lines():
    plan = parse_plan(MESSY, "m.plan")
    assert format_plan(plan) == EXPECTED
    assert _strip_positions(parse_plan(EXPECTED, "m.plan")) == _strip_positions(plan)


def test_fmt_command_check_and_rewrite(tmp_path, capsys):
    path = tmp_path / "m.plan"
    path.write_text(MESSY)
    assert main(["fmt", "--check", str(path)]) == 1
    assert path.read_text() == MESSY
    assert "would reformat" in capsys.readouterr().out
    assert main(["fmt", str(path)]) == 0
    assert path.read_text() == EXPECTED
    assert main(["fmt", "--check", str(path)]) == 0


def test_fmt_refuses_a_file_that_does_not_parse(tmp_path, capsys):
    path = tmp_path / "bad.plan"
    path.write_text("stage A 0..: v @\n")
    assert main(["fmt", str(path)]) == 2
    assert path.read_text() == "stage A 0..: v @\n"
    assert "bad.plan:1:16: error:" in capsys.readouterr().err
