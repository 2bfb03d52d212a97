"""Upscaling with the demo's model (plans/demo.plan at 1/20 of its steps: 60 steps, about a minute on 2
cores): tiled and untiled agree, tile borders leave no seams, and the exported demo gives the CLI's image."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ditsr_plan.cli import main
from ditsr_plan.compiler import compile_plan
from ditsr_plan.runtime.run import run_plan
from ditsr_plan.runtime.validate.tiled import Tiling

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    run_plan(compile_plan("plans/demo.plan", time_scale=0.05), root / "run", quiet=True)
    assert main(["export", str(root / "run"), "--merge", str(root / "exported"), "-q"]) == 0
    return root


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) / 2).pow(2).mean())
    return 10 * math.log10(1 / mse) if mse > 0 else math.inf


def _smooth(size: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    return torch.stack([0.6 * torch.sin(3 * x + 1), 0.5 * torch.cos(2 * y), 0.4 * (x - y)])[None]


def test_tiled_and_untiled_agree_and_tile_borders_leave_no_seams(demo):
    from ditsr_plan.pipeline import DiTSRPipeline

    pipe = DiTSRPipeline.from_pretrained(demo / "exported")
    lr = _smooth(48)  # 192 px out, untiled one 48 x 48 latent; tiled: 64 px tiles overlapping by 32 px, 25 of them
    untiled = pipe.upscale_tensor(lr, pipe.settings(tile="off"))
    settings = pipe.settings(tile=64, overlap=32)
    tiled = pipe.upscale_tensor(lr, settings)
    assert pipe.tiles(48, 48, settings) == (64, 25)
    assert _psnr(tiled, untiled) >= 40
    tiling = Tiling(48, 48, 16, 8)  # in latent pixels of 4 px
    borders = sorted({4 * (s + 16) for s in tiling.starts(48)[:-1]} | {4 * s for s in tiling.starts(48)[1:]})
    inside = [c for c in range(4, 188) if all(abs(c - b) > 4 for b in borders)]
    for axis in (-1, -2):
        steps = tiled[0].diff(dim=axis).abs().mean(dim=(0, -1 if axis == -2 else -2))  # between column/row c, c+1
        at_borders = float(steps[[b - 1 for b in borders]].mean())
        assert at_borders <= 1.1 * float(steps[inside].mean()), (axis, at_borders, float(steps[inside].mean()))


def test_after_the_demo_every_kind_of_image_gives_4x_and_the_export_gives_the_cli_image(demo, tmp_path):
    from ditsr_plan.pipeline import DiTSRPipeline

    rs = np.random.RandomState(0)
    (tmp_path / "in" / "sub").mkdir(parents=True)
    Image.fromarray((rs.rand(21, 27, 3) * 255).astype("uint8")).save(tmp_path / "in" / "odd.png")
    Image.fromarray((rs.rand(19, 23) * 255).astype("uint8"), "L").save(tmp_path / "in" / "sub" / "gray.png")
    Image.fromarray((rs.rand(17, 25, 4) * 255).astype("uint8"), "RGBA").save(tmp_path / "in" / "sub" / "rgba.png")
    assert main(["upscale", str(demo / "run"), str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-q"]) == 0
    for name, (w, h) in {"odd.png": (27, 21), "sub/gray.png": (23, 19), "sub/rgba.png": (25, 17)}.items():
        with Image.open(tmp_path / "out" / name) as im:
            assert im.size == (4 * w, 4 * h), name
    argv = ["upscale", str(demo / "exported"), str(tmp_path / "in" / "odd.png"), "-o", str(tmp_path / "exp")]
    assert main([*argv, "--seed", "9", "-q"]) == 0
    with Image.open(tmp_path / "in" / "odd.png") as im:
        [ours] = DiTSRPipeline.from_pretrained(demo / "exported")(im, generator=torch.Generator().manual_seed(9))
    with Image.open(tmp_path / "exp" / "odd.png") as cli:
        assert np.array_equal(np.asarray(cli), np.asarray(ours))
