import json
import math
from pathlib import Path

import pytest

from ditsr_plan.compiler import ScheduleGraph, compile_plan
from ditsr_plan.diagnostics import PlanError

HEAD = "plan t\nsteps 10k\nloss a vpred\nloss b lpips\nloss g patchgan d_warmup=500 lr=2e-4\noptim lr=1e-5\n"


@pytest.fixture(scope="module")
def v10():
    return compile_plan("plans/v10.plan")


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (1000, {"v": 1, "latent_l1": 1, "lpips": 0, "edge": 0, "flat": 0, "gan": 0}),
        (6000, {"v": 1, "latent_l1": 1, "lpips": 0.175, "edge": 0.03, "flat": 0.04, "gan": 0}),
        (9000, {"lpips": 0.35, "edge": 0.06, "flat": 0.08, "gan": 0}),
        (11000, {"gan": 0.015, "lpips": 0.40, "flat": 0.09, "edge": 0.06}),
        (14000, {"gan": 0.03, "lpips": 0.45, "flat": 0.10}),
    ],
)
def test_v10_weights(v10, step, expected):
    weights = v10.weights_at(step)
    for name, value in expected.items():
        assert weights[name] == pytest.approx(value, abs=1e-12), name


def test_v10_needs_and_live_set(v10):
    assert v10.live_terms(1000) == ["v", "latent_l1"]
    assert v10.needs_at(1000).pixel is False and v10.needs_at(1000).discriminator is False
    assert v10.needs_at(11000).pixel and v10.needs_at(11000).discriminator
    # a ramp from 0 is 0 on its first step: nothing is live (or computed) there
    assert "lpips" not in v10.live_terms(3000) and "lpips" in v10.live_terms(3001)
    assert v10.needs_at(9000).discriminator is False and v10.needs_at(9001).discriminator is True
    assert [s.name for s in v10.stages] == ["A", "B", "C"] and v10.stage_at(8999).name == "B"


def test_carry_arrow_from_carried_after_and_cosine(write_plan):
    path = write_plan(
        HEAD + "stage A 0..2k: a 1; b 0.2\nstage B 2k..6k: b ->0.6 cosine after 1k over 2k\nstage C 6k..: a off\n"
    )
    g = compile_plan(path)
    assert g.weights_at(2500)["b"] == 0.2  # held during 'after'
    assert g.weights_at(4000)["b"] == pytest.approx(0.2 + 0.4 * (1 - math.cos(math.pi * 0.5)) / 2)
    assert g.weights_at(5000)["b"] == pytest.approx(0.6)  # held after the ramp
    assert g.weights_at(7000) == pytest.approx({"a": 0.0, "b": 0.6, "g": 0.0, "lr": 1e-5, "lr_d": 2e-4})
    assert g.weights_at(1999)["a"] == 1 and g.weights_at(5999)["a"] == 1  # carried through B


def test_never_mentioned_is_zero_and_lr_defaults_to_the_optimiser(write_plan):
    g = compile_plan(write_plan(HEAD + "stage A 0..: a 1; lr 1e-5->0 linear\n"))
    w = g.weights_at(0)
    assert (w["b"], w["g"], w["lr"], w["lr_d"]) == (0, 0, 1e-5, 2e-4)
    assert g.weights_at(5000)["lr"] == pytest.approx(5e-6)


def test_discriminator_warmup_window(write_plan):
    g = compile_plan(write_plan(HEAD + "stage A 0..4k: a 1\nstage B 4k..: g 0->0.03 linear over 2k\n"))
    # the GAN is live from 4001; D trains alone for the 500 steps before
    assert not g.needs_at(3500).discriminator
    assert g.needs_at(3501).discriminator and not g.needs_at(3501).pixel
    assert "g" not in g.live_terms(3501)
    assert g.needs_at(4001).discriminator and g.needs_at(4001).pixel


def test_time_scale_keeps_the_shape(v10):
    small = compile_plan("plans/v10.plan", time_scale=0.01)
    assert small.total_steps == 150
    assert [(s.start, s.end) for s in small.stages] == [(0, 30), (30, 90), (90, 150)]
    assert small.weights_at(60)["lpips"] == pytest.approx(0.175)
    assert small.weights_at(110)["gan"] == pytest.approx(0.015)
    assert small.terms["gan"].settings.r1_every == 1  # intervals never scale to 0
    assert small.hash != v10.hash


def test_hash_ignores_formatting_comments_declaration_order_and_defaults(write_plan, v10):
    text = Path("plans/v10.plan").read_text()
    lines = text.splitlines()
    losses = [line for line in lines if line.startswith("loss")]
    others = [line for line in lines if not line.startswith("loss")]
    shuffled = "# another comment\n" + "\n".join(reversed(losses)) + "\n\n" + "\n".join(others) + "\n"
    shuffled = shuffled.replace("min_snr=5", "min_snr=5.0 formula=v").replace("  ", " ")
    assert compile_plan(write_plan(shuffled)).hash == v10.hash
    changed = text.replace("gan 0->0.03", "gan 0->0.04")
    assert compile_plan(write_plan(changed)).hash != v10.hash


def test_graph_json_round_trip(v10):
    data = json.loads(json.dumps(v10.to_json()))
    again = ScheduleGraph.from_json(data)
    assert again.hash == v10.hash
    assert again.weights_at(11000) == v10.weights_at(11000)
    assert again.needs_at(3501) == v10.needs_at(3501)
    data["knobs"]["gan"]["pieces"][-1][3] = 0.5
    with pytest.raises(ValueError, match="hash mismatch"):
        ScheduleGraph.from_json(data)


def test_overlap_points_at_both_stages(write_plan):
    path = write_plan(HEAD + "stage A 0..4k: a 1\nstage B 3k..: a 1\n")
    with pytest.raises(PlanError) as exc:
        compile_plan(path)
    (d,) = exc.value.diagnostics
    assert d.pos.line == 8 and d.notes[0].pos.line == 7


def test_all_schedule_errors_are_collected(write_plan):
    path = write_plan(HEAD + "stage A 0..3k: a 1; x 1\nstage B 4k..9k: b 0->1 over 6k; y 2\n")
    with pytest.raises(PlanError) as exc:
        compile_plan(path)
    messages = [d.message for d in exc.value.diagnostics]
    assert len(messages) == 5, messages
    assert any("no stage" in m and "3k..4k" in m for m in messages)
    assert any("9k..10k are in no stage" in m for m in messages)
    assert sum("unknown term" in m for m in messages) == 2


def test_more_eval_steps_than_timesteps_is_an_error_at_the_steps(write_plan):
    """diffusers refuses a sampler of more steps than the schedule's timesteps: found here, not at the first eval."""
    path = write_plan("steps 1000\nloss a vpred\ndiffusion train_steps=100\neval steps=200\nstage A 0..: a 1\n")
    with pytest.raises(PlanError) as exc:
        compile_plan(path)
    (d,) = exc.value.diagnostics
    assert (d.pos.line, d.pos.col) == (4, 6) and "more than the diffusion's 100 timesteps" in d.message
    compile_plan(path, overrides=("eval.steps=100",))


def test_stage_that_vanishes_under_time_scale(write_plan):
    path = write_plan("steps 1000\nloss a vpred\nstage A 0..1: a 1\nstage B 1..: a 1\n")
    with pytest.raises(PlanError, match="no steps left at time scale"):
        compile_plan(path, time_scale=0.1)


def test_bad_time_scale():
    with pytest.raises(PlanError, match="positive"):
        compile_plan("plans/v10.plan", time_scale=0)
