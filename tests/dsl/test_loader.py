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
    from ditsr_plan.settings import schemas

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


def test_an_extends_path_with_a_nul_is_an_error_not_a_crash(write_plan):
    # found by tests/cli/test_hypothesis.py: os.path.realpath raised ValueError on it
    child = write_plan('extends " \x00 "\nplan c\n', "c.plan")
    with pytest.raises(PlanError, match="extends path contains a NUL character"):
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


@pytest.mark.parametrize(
    ("override", "col", "message"),
    [
        ("run.device=tpu", 12, "invalid value 'tpu' for 'device': expected one of auto, cpu, cuda, cuda:N"),
        ("eval.lq_init=1.5", 14, "invalid value '1.5' for 'lq_init': lq_init must be in [0, 1]"),
        ("gan.loss=wasserstein", 10, "invalid value 'wasserstein' for 'loss': expected one of hinge, nonsat"),
        ("ema.decay=0.999k", 11, "invalid value '0.999k' for 'decay': expected a number in [0, 1)"),
    ],
)
def test_set_overrides_get_the_files_messages_positioned_in_the_set_pseudo_file(override, col, message):
    from ditsr_plan.compiler import compile_plan

    with pytest.raises(PlanError) as exc:
        compile_plan("plans/v10.plan", overrides=["run.seed=1", override])
    (diag,) = exc.value.diagnostics
    assert (diag.pos.file, diag.pos.line, diag.pos.col) == ("--set", 2, col)
    assert diag.message == message


def test_a_missing_required_key_names_the_key_and_what_it_expects(write_plan):
    path = write_plan("steps 1k\nloss v vpred\ndata folder crop=64\nstage A 0..: v 1\n")
    with pytest.raises(PlanError) as exc:
        load_plan(path)
    (diag,) = exc.value.diagnostics
    assert diag.message == "data folder needs root=PATH (a folder of HR images)"
    assert (diag.pos.line, diag.pos.col, diag.pos.length) == (3, 6, 6)  # the caret under the block's kind
    assert "Field required" not in str(exc.value) and "Input should" not in exc.value.render()


def _every_field():
    from ditsr_plan.settings.schemas import BLOCKS, TERM_KINDS

    for kind, schema in TERM_KINDS.items():
        for key in schema.model_fields:
            yield f"loss x {kind}", schema, key
    for block, kinds in BLOCKS.items():
        for kind, schema in kinds.items():
            for key in schema.model_fields:
                yield f"{block} {kind or ''}".strip(), schema, key


@pytest.mark.parametrize(("line", "schema", "key"), list(_every_field()), ids=lambda x: str(x))
def test_no_setting_error_speaks_pydantic(write_plan, line, schema, key):
    """A nonsense value for any key of any block or kind: a message in the plan's words, positioned."""
    required = " ".join(f"{k}=x" for k, f in schema.model_fields.items() if f.is_required() and k != key)
    path = write_plan(f"steps 1k\nloss v vpred\n{line} {required} {key}=@@\nstage A 0..: v 1\n")
    try:
        load_plan(path)
    except PlanError as exc:
        text = exc.render()
        for phrase in ("Input should", "Field required", "String should", "valid number", "validation error"):
            assert phrase not in text, text
        assert all(d.pos is not None for d in exc.diagnostics)


def test_one_bad_statement_does_not_hide_the_other_mistakes(write_plan):
    """Five mistakes of four kinds (a bad number in a stage, a syntax error, three bad settings): all five
    are reported at once."""
    path = write_plan(
        "plan five\nsteps 10k\nloss v vpred min_snr=abc\nema decay=0.999k\n"
        "stage A 0..2k: v 1; v2 2k\nstage B 2k..: v 1 latent 2\nmodel dit preset=huge\n"
    )
    with pytest.raises(PlanError) as exc:
        load_plan(path)
    assert [d.pos.line for d in exc.value.diagnostics] == [3, 4, 5, 6, 7]
    assert "the k suffix is only for step counts" in exc.value.diagnostics[1].hint


def test_a_child_of_a_broken_parent_gets_no_spurious_errors(write_plan):
    write_plan("plan parent\nsteps 10k\nloss v vpred\nstage A 0..5k: v 1\nstage C 5k.. v 1\n", "parent.plan")
    child = write_plan('extends "parent.plan"\nplan child\namend stage C: v 0.5\n', "child.plan")
    with pytest.raises(PlanError) as exc:
        load_plan(child)
    (only,) = exc.value.diagnostics  # the parent's syntax error, not "amend names stage 'C'"
    assert only.pos.file.endswith("parent.plan") and only.pos.line == 5
