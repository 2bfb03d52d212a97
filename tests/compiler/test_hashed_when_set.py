"""Settings added after plans were run (``HashedWhenSet``): at their default they stay out of a plan's meaning,
so old plans keep their hashes and their runs resume; set to another value they change the hash, and
``diff`` shows them."""

from __future__ import annotations

from pathlib import Path

import pytest

from ditsr_plan.compiler import compile_plan
from ditsr_plan.compiler.diff import diff_graphs, render_text
from ditsr_plan.compiler.graph import ScheduleGraph
from ditsr_plan.settings import schemas

ROOT = Path(__file__).resolve().parents[2]
V10 = ROOT / "plans" / "v10.plan"
V10_HASH = "8dc311af533831e0"  # v10's hash before the late settings existed: runs of it must still resume


def _graph(overrides: tuple[str, ...] = ()) -> ScheduleGraph:
    return compile_plan(V10, overrides=overrides)


def test_the_late_fields_are_marked():
    assert set(schemas.hash_neutral(schemas.Pixel)) == {"clamp"}
    assert set(schemas.hash_neutral(schemas.Diffusion)) == {"set_alpha_to_one", "dropout_drops", "t_min"}
    assert set(schemas.hash_neutral(schemas.PatchGan)) == {"norm_affine"}
    pyramid = {"adapter", "adapter_layers", "pyramid_width", "pyramid_heads"}
    assert set(schemas.hash_neutral(schemas.PixartModel)) == {"train_add", "train_remove", "cond_lr_on"} | pyramid
    late_eval = {"pack_input", "guidance_drops", "tile", "overlap", "color_fix", "spacing", "start_noise"}
    assert set(schemas.hash_neutral(schemas.Eval)) == late_eval
    late_dit = {"train_add", "train_remove", "cond_lr_on", "init", "lr_context"}
    assert set(schemas.hash_neutral(schemas.DitModel)) == late_dit


# every shipped plan's hash before the late settings existed (the reference and demo plans changed on purpose)
HASHES_BEFORE = {
    "plans/v10.plan": V10_HASH,
    "plans/legacy/v8.plan": "65b95a5df46aa6a5",
    "plans/legacy/v8_edge_gtmask.plan": "7a9b43bb7c05132d",
    "plans/legacy/v8_old.plan": "c7f4ac0c56e37c23",
    "plans/legacy/v9_gan.plan": "e7ddddb1f77a7b21",
    "plans/legacy/v9_gan_edge_gtmask.plan": "ff868b0af2ffe55f",
    "plans/matrix/exp1.plan": "a2055f66d581ec42",
    "plans/matrix/exp2.plan": "d22834e3e54a0fc4",
    "plans/matrix/exp3.plan": "b83a30b429927d26",
}


@pytest.mark.parametrize(("plan", "digest"), sorted(HASHES_BEFORE.items()))
def test_an_old_plan_keeps_its_hash(plan, digest):
    """Runs of these plans made before the late settings resume: the checkpoint's plan hash still matches."""
    assert compile_plan(ROOT / plan).hash == digest


@pytest.mark.parametrize(
    "setting",
    [
        "pixel.clamp=false",
        "diffusion.set_alpha_to_one=true",
        "diffusion.t_min=0",
        "gan.norm_affine=false",
        "eval.pack_input=auto",
        "model.lr_context=0",
    ],
)
def test_a_late_setting_written_at_its_default_keeps_the_hash(setting):
    assert _graph((setting,)).hash == V10_HASH


@pytest.mark.parametrize(
    "setting",
    [
        "pixel.clamp=true",
        "diffusion.set_alpha_to_one=false",
        "diffusion.t_min=500",
        "gan.norm_affine=true",
        "eval.pack_input=stored",
        "model.lr_context=16",
    ],
)
def test_a_late_setting_set_otherwise_changes_the_hash_and_diff_shows_it(setting):
    changed = _graph((setting,))
    assert changed.hash != V10_HASH
    key = setting.split(".")[1].split("=")[0]
    text = render_text(diff_graphs(_graph(), changed))
    assert key in text and "(none)" not in text  # the default it had is shown, not "(none)"


def test_the_graph_json_round_trip_keeps_a_late_setting():
    graph = _graph(("pixel.clamp=true",))
    again = ScheduleGraph.from_json(graph.to_json())
    assert again.block("pixel").clamp is True and again.hash == graph.hash
    plain = ScheduleGraph.from_json(_graph().to_json())
    assert plain.block("pixel").clamp is False and plain.hash == V10_HASH
