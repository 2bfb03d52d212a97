import pytest

from ditsr_plan.diagnostics import PlanError
from ditsr_plan.dsl.loader import load_plan

BASE = """plan base
steps 12k
loss v     vpred min_snr=5
loss lpips lpips net=vgg
ema decay=0.999 start=100
stage A 0..3k: v 1
stage B 3k..:  lpips 0->0.3 linear
"""


def test_child_overrides_by_name_and_amends_a_stage(write_plan):
    write_plan(BASE, "base.plan")
    child = write_plan(
        'extends "base.plan"\nsteps 15k\nloss lpips lpips net=alex\nema decay=0.99\n'
        "loss gan patchgan\namend stage B: gan 0->0.03 linear over 4k\n",
        "child.plan",
    )
    spec = load_plan(child)
    assert spec.name == "child"  # named by its own file, not the parent's
    assert spec.steps.value == 15000
    assert spec.terms["lpips"].settings.net == "alex"
    assert spec.terms["v"].settings.min_snr == 5
    assert spec.blocks["ema"].settings.decay == 0.99
    assert spec.blocks["ema"].settings.start == 100  # keys merge
    stage_b = spec.stages[1]
    assert list(stage_b.terms) == ["lpips", "gan"]


def test_restated_stage_replaces_the_parents(write_plan):
    write_plan(BASE, "base.plan")
    child = write_plan('extends "base.plan"\nstage B 3k..: lpips 0.1\n', "child.plan")
    (stmt,) = load_plan(child).stages[1].terms.values()
    assert stmt.op == "const" and stmt.value.value == 0.1


def test_a_block_of_another_kind_is_replaced_whole(write_plan, monkeypatch):
    from ditsr_plan.dsl import schemas

    class Folder(schemas.Schema):
        root: str = "x"

    class Builtin(schemas.Schema):
        size: int = 1

    monkeypatch.setitem(schemas.BLOCKS, "data", {"folder": Folder, "builtin": Builtin})
    write_plan(BASE + "data folder root=/d\n", "base.plan")
    child = write_plan('extends "base.plan"\ndata builtin size=4\n', "child.plan")
    block = load_plan(child).blocks["data"]
    assert block.kind.text == "builtin" and block.settings.size == 4


def test_extends_cycle_and_missing_parent(write_plan):
    write_plan('extends "b.plan"\n', "a.plan")
    b = write_plan('extends "a.plan"\n', "b.plan")
    with pytest.raises(PlanError, match="extends cycle"):
        load_plan(b)
    missing = write_plan('extends "nope.plan"\n', "m.plan")
    with pytest.raises(PlanError, match="does not exist"):
        load_plan(missing)


def test_symlink_loop_is_an_error_not_a_hang(write_plan, tmp_path):
    (tmp_path / "loop.plan").symlink_to(tmp_path / "loop.plan")
    child = write_plan('extends "loop.plan"\n', "c.plan")
    with pytest.raises(PlanError, match=r"cannot read|does not exist"):
        load_plan(child)


@pytest.mark.parametrize("target", ["https://x.org/a.plan", "~/a.plan", "$HOME/a.plan"])
def test_extends_takes_only_file_paths(write_plan, target):
    child = write_plan(f'extends "{target}"\nplan c\n', "c.plan")
    with pytest.raises(PlanError, match="extends takes a file path"):
        load_plan(child)


def test_settings_are_validated_with_did_you_mean(write_plan):
    path = write_plan("steps 1k\nloss gan patchgan r1_evry=16 layers=0\nstage A 0..: gan off\n")
    with pytest.raises(PlanError) as exc:
        load_plan(path)
    messages = {d.message: d.hint for d in exc.value.diagnostics}
    assert messages["unknown key 'r1_evry' for loss kind 'patchgan'"] == "did you mean 'r1_every'?"
    assert any(m.startswith("invalid value '0' for 'layers'") for m in messages)


def test_nan_and_inf_are_rejected_in_settings(write_plan):
    path = write_plan("steps 1k\nloss v vpred min_snr=nan\nema decay=inf\nstage A 0..: v 1\n")
    with pytest.raises(PlanError) as exc:
        load_plan(path)
    assert len(exc.value.diagnostics) == 2


def test_non_utf8_file_is_a_clear_error(write_plan, tmp_path):
    path = tmp_path / "bin.plan"
    path.write_bytes(b"plan \xff\xfe\n")
    with pytest.raises(PlanError, match="not UTF-8"):
        load_plan(path)
