"""``ditsr-plan show PLAN --params``: the generator built from the model folder's config.json alone (meta
device, no weight read), trained and frozen counts per group, a memory estimate; checked against the facts of
reference-setup.md ("The model as the scripts built it") at PixArt-XL/2 shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ditsr_plan.cli import main
from ditsr_plan.testing import make_pixart, pixart_xl_config, pretrained_plan, trainer_for

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "plans" / "reference" / "pixart_v10.plan"
LORA_ONLY = ROOT / "plans" / "reference" / "pixart_v10_lora.plan"

# at PixArt-XL/2 shape (28 blocks, width 1152), rank 16: diffusers splits the scripts' fused qkv and kv, so
# LoRA on attn1/attn2 to_q/to_k/to_v/to_out.0 holds 8 x 16 x 2304 per block where the scripts' fused layers
# held 239,616; the caption projection's two linears 16 x (4096 + 1152) + 16 x (1152 + 1152)
LORA_ATTENTION = 28 * 8 * 16 * 2304
LORA_CAPTION = 16 * (4096 + 1152) + 16 * (1152 + 1152)
SCRIPTS_LORA_ATTENTION = 28 * 239_616
MLP = 297_432_576  # facts: every block MLP, 297.4M


def _params(plan: Path, folder: Path, capsys, *more: str) -> dict:
    assert main(["show", str(plan), "--params", "--format", "json", *more]) == 0
    return json.loads(capsys.readouterr().out)


def _plan_at(tmp_path: Path, parent: Path, folder: Path) -> Path:
    plan = tmp_path / f"{parent.stem}_here.plan"
    plan.write_text(f'extends "{parent}"\nplan {parent.stem}_here\nmodel pixart path={folder} subfolder=transformer\n')
    return plan


def test_the_census_of_a_tiny_pixart_matches_the_model_a_run_builds(tmp_path, capsys):
    folder = make_pixart(tmp_path)
    plan = pretrained_plan(tmp_path, f"model pixart path={folder} lora=4 cond=concat+adapter train=lora+rest")
    result = _params(plan, folder, capsys)
    model = trainer_for(plan).model
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert (result["trained"], result["frozen"]) == (trained, frozen)
    assert isinstance(result["trained"], int) and isinstance(result["frozen"], int)
    assert sum(g["trained"] for g in result["groups"].values()) == trained
    assert result["ema_shadow"] == trained  # the plan has an ema block
    m = result["memory"]
    assert m["optimizer"] == 8 * trained and m["gradients"] == m["ema"] == 4 * trained
    assert m["weights"] == 4 * trained + 2 * frozen and m["total"] == sum(v for k, v in m.items() if k != "total")
    # the run header prints the same groups
    from ditsr_plan.runtime.train.generators.census import count, groups_line

    line = groups_line(count(model, ema=True))
    assert line.startswith("trains: ") and all(name in line for name in result["groups"])
    assert count(model, ema=True)["groups"] == result["groups"]


def test_the_reference_plans_at_pixart_xl_shape(tmp_path, capsys):
    folder = pixart_xl_config(tmp_path / "PixArt-XL-2-512x512")
    scripts = _params(_plan_at(tmp_path, REFERENCE, folder), folder, capsys)
    groups = scripts["groups"]
    # LoRA on the attention, the caption projection and the injection's 20 res_proj (1152 -> 1152, rank 16)
    assert groups["LoRA"]["trained"] == LORA_ATTENTION + LORA_CAPTION + 20 * 16 * 2 * 1152
    assert groups["base MLP"]["trained"] == MLP and groups["base MLP"]["frozen"] == 0
    assert groups["base attention"]["trained"] == 0  # the wrapped base weights stay frozen
    # the facts: the adapter 113.6528M, the injection 57.1M (its res_proj bases frozen), 487.8M in all
    assert groups["adapter"]["trained"] == 113_652_800
    assert groups["injection"]["trained"] == pytest.approx(57.1e6, rel=0.01)
    assert scripts["trained"] == pytest.approx(487.8e6, rel=0.02)
    # what is left over is our LoRA being 1.55M larger (diffusers splits the fused qkv and kv)
    ours = scripts["trained"] - (LORA_ATTENTION - SCRIPTS_LORA_ATTENTION)
    assert ours == pytest.approx(487.8e6, rel=0.002)
    lora_only = _params(_plan_at(tmp_path, LORA_ONLY, folder), folder, capsys)
    assert 8e6 <= lora_only["trained"] <= 20e6


def test_a_config_beyond_any_model_is_refused_before_anything_is_built(tmp_path, capsys):
    folder = pixart_xl_config(tmp_path / "huge", num_layers=10**30)
    plan = _plan_at(tmp_path, LORA_ONLY, folder)
    assert main(["show", str(plan), "--params"]) == 2
    err = capsys.readouterr().err
    assert "num_layers=1000000000000000000000000000000" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"attention_head_dim": 1e300}, "attention_head_dim=1e+300, beyond what a model holds"),
        ({"block_out_channels": list(range(1000))}, "block_out_channels with 1000 values"),
        ({"_class_name": "AutoencoderKL"}, "holds an AutoencoderKL, not a PixArtTransformer2DModel"),
    ],
)
def test_hostile_model_configs_are_named_errors(tmp_path, capsys, changes, message):
    folder = pixart_xl_config(tmp_path / "bad", **changes)
    assert main(["show", str(_plan_at(tmp_path, LORA_ONLY, folder)), "--params"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_missing_model_folder_is_a_named_error(tmp_path, capsys):
    assert main(["show", str(_plan_at(tmp_path, LORA_ONLY, tmp_path / "nowhere")), "--params"]) == 2
    assert "no such folder" in capsys.readouterr().err
