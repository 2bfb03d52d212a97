"""Packs in the reference scripts' layout: gt512/, lq128/ (the true x4 LR) and lq512/ (the LR upsampled when
the pack was made, named after the GT's size: reference-setup.md, "Validation pack input"). ``eval
pack_input=`` picks the model's input and baseline: the stored lq512/ (the scripts'), or the true LR
upsampled here; what was used is recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ditsr_plan.runtime.train.data import load_image
from ditsr_plan.runtime.train.degradation import upsample
from ditsr_plan.runtime.validate.packs import PackError, load_pack, pack_baseline

NAMES = ("a.png", "b.png")


def _write(folder: Path, size: int, seed: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in NAMES:
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / name)


def _pack(root: Path, *folders: tuple[str, int]) -> Path:
    for i, (name, size) in enumerate(folders):
        _write(root / name, size, i)
    return root


def scripts_pack(root: Path) -> Path:
    return _pack(root, ("gt32", 32), ("lq8", 8), ("lq32", 32))


def test_the_scripts_layout_feeds_the_stored_upsampled_lr(tmp_path):
    pack = scripts_pack(tmp_path / "pack")
    images = load_pack(pack, 4)  # pack_input=auto
    assert [im.input for im in images] == ["stored", "stored"]
    for im in images:
        assert torch.equal(im.lr_up[0], load_image(pack / "lq32" / im.name))
    # the baseline is the stored image too
    base = pack_baseline(images, 4)
    assert base["a.png"]["psnr"] == pytest.approx(
        pack_baseline(load_pack(pack, 4, pack_input="stored"), 4)["a.png"]["psnr"]
    )


def test_upsample_uses_the_true_lr(tmp_path):
    pack = scripts_pack(tmp_path / "pack")
    images = load_pack(pack, 4, pack_input="upsample")
    assert [im.input for im in images] == ["upsample", "upsample"]
    expected = upsample(load_image(pack / "lq8" / "a.png")[None], (32, 32))
    assert torch.equal(images[0].lr_up, expected)


def test_a_two_folder_pack_keeps_working(tmp_path):
    pack = _pack(tmp_path / "pack", ("gt", 32), ("lq", 8))
    assert [im.input for im in load_pack(pack, 4)] == ["upsample", "upsample"]
    with pytest.raises(PackError, match="pack_input=stored, but the pack holds no stored upsampled LR"):
        load_pack(pack, 4, pack_input="stored")


def test_a_pack_with_only_the_stored_lr(tmp_path):
    pack = _pack(tmp_path / "pack", ("gt32", 32), ("lq32", 32))
    assert [im.input for im in load_pack(pack, 4)] == ["stored", "stored"]
    with pytest.raises(PackError, match="holds only the stored upsampled LR lq32/"):
        load_pack(pack, 4, pack_input="upsample")


@pytest.mark.parametrize(
    ("folders", "message"),
    [
        ((("gt32", 32), ("lq8", 8), ("lqx", 8)), "neither named after the GT folder"),
        ((("gt32", 32), ("lq8", 8), ("lq32", 32), ("lq16", 16)), "3 lq\\* folders"),
        ((("gt32", 32), ("lq8", 8), ("lq32", 16)), "a stored upsampled LR must have the GT's size"),
    ],
)
def test_layouts_that_say_nothing_clear_are_refused(tmp_path, folders, message):
    pack = _pack(tmp_path / "pack", *folders)
    with pytest.raises(PackError, match=message):
        load_pack(pack, 4)


def test_the_names_of_every_lq_folder_must_match(tmp_path):
    pack = scripts_pack(tmp_path / "pack")
    (pack / "lq8" / "b.png").rename(pack / "lq8" / "c.png")
    with pytest.raises(PackError, match="the file names of gt32/ and lq8/ differ"):
        load_pack(pack, 4)


def test_a_run_and_evaluate_record_which_input_they_used(tmp_path, capsys):
    import json

    from ditsr_plan.cli import main
    from ditsr_plan.compiler import compile_plan
    from ditsr_plan.runtime.run import run_plan
    from ditsr_plan.testing import tiny_plan

    pack = scripts_pack(tmp_path / "pack")
    extra = f"eval every=2 steps=2 size=32 lpips=off pack={pack}\n"
    plan = tiny_plan(tmp_path / "p", steps=2, ckpt=2, terms="loss v vpred\n", stages="stage A 0..: v 1\n", extra=extra)
    run_plan(compile_plan(plan), tmp_path / "run", quiet=True)
    record = json.loads((tmp_path / "run" / "eval.jsonl").read_text().splitlines()[-1])
    assert record["pack"]["input"] == "stored"
    stored_baseline = pack_baseline(load_pack(pack, 4, pack_input="stored"), 4)["mean"]["psnr"]
    assert record["pack"]["bicubic"]["mean"]["psnr"] == pytest.approx(stored_baseline, abs=1e-4)
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run"), "--pack", str(pack), "--format", "json", "--steps", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["input"] == "stored"
    args = ["evaluate", str(tmp_path / "run"), "--pack", str(pack), "--format", "json", "--steps", "1"]
    assert main([*args, "--pack-input", "upsample", "--out", str(tmp_path / "up")]) == 0
    assert json.loads(capsys.readouterr().out)["input"] == "upsample"
