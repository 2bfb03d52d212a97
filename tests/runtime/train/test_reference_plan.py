"""The reference plans lint clean and train on a tiny random PixArt on the CPU (the tests' models): every
term live in stage C, the scripts' trained set and learning rates, the late settings in force."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ditsr_plan.cli import main
from ditsr_plan.testing import make_pixart, make_vae, save_original_pixart, trainer_for

ROOT = Path(__file__).resolve().parents[3]
PLANS = ROOT / "plans" / "reference"


def test_the_reference_plans_lint_clean(capsys):
    assert main(["lint", str(PLANS)]) == 0
    assert "no findings" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["pixart_v10", "pixart_v10_lora"])
def test_the_reference_plan_trains_on_a_tiny_pixart(tmp_path, name):
    make_pixart(tmp_path / "PixArt").rename(tmp_path / "PixArt" / "transformer")
    # the scripts' plan loads the original checkpoint (.pth: its learned null caption); the LoRA-only one a folder
    original = save_original_pixart(tmp_path / "PixArt" / "transformer", tmp_path / "PixArt-XL-2-512x512.pth")
    # a width of 16 is no whole number of PixArt's 72-wide heads: the tiny model's shape comes from a config beside it
    shutil.copy(tmp_path / "PixArt" / "transformer" / "config.json", tmp_path / "config.json")
    model = original if name == "pixart_v10" else tmp_path / "PixArt"
    vae = make_vae(tmp_path)
    images = tmp_path / "hr"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(images / f"{i}.png")
    overrides = (
        f"model.path={model}",
        "model.checkpointing=false",
        f"latent.path={vae}",
        f"data.root={images}",
        "data.crop=32",
        "data.workers=0",
        "optim.accum=1",
        "lpips.backbone=random",
        *(("model.pyramid_width=32",) if name == "pixart_v10" else ()),  # the scripts' 128: 114M parameters
    )
    trainer = trainer_for(PLANS / f"{name}.plan", overrides)
    trained = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    if name == "pixart_v10":
        assert any(".ff.net." in n for n in trained) and not any(".base_layer." in n for n in trained)
        assert trainer.patch.clamp and trainer.terms["gan"].settings.norm_affine
        assert trainer.model.injection is not None  # the scripts' pyramid adapter and its injection
        assert any(n.startswith("injection.") and "res_proj" in n and "lora_" in n for n in trained)
    for step in (0, 12_001):  # stage A, then stage C with every term live and D training
        record = trainer.train_step(step, [trainer.data.batch(step)])
        assert not record.nonfinite and np.isfinite(record.loss)
    assert set(record.raw) >= {"v", "lpips", "edge", "flat", "gan"}  # stage C: every term computed
    moved = [n for n, p in trainer.model.named_parameters() if n in before and not torch.equal(p, before[n])]
    assert moved  # it trains
