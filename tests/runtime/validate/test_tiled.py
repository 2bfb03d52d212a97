"""Tiled sampling: the layout, the blend weights, untiled equivalence, the eval settings' hash neutrality,
and the colour fix."""

import itertools

import pytest
import torch

from ditsr_plan.compiler import compile_plan
from ditsr_plan.runtime.validate.colorfix import adain_fix, color_fix, low_pass, wavelet_fix
from ditsr_plan.runtime.validate.evaluator import Evaluator
from ditsr_plan.runtime.validate.tiled import TiledVelocity, Tiling, blend_weights, latent_tiling
from ditsr_plan.settings.schemas import Eval
from ditsr_plan.testing import tiny_plan, tiny_trainer

torch.set_num_threads(2)
EVAL = Eval(every=2, steps=3, size=64, lq_init=0.0, seed=0, lpips="off")


@pytest.mark.parametrize(("size", "tile", "overlap"), [(50, 16, 4), (16, 16, 4), (17, 16, 8), (100, 32, 0), (9, 32, 8)])
def test_tiles_cover_the_latent_and_overlap_at_least_as_asked(size, tile, overlap):
    tiling = Tiling(size, size, tile, overlap)
    starts = tiling.starts(size)
    assert starts[0] == 0 and starts[-1] + min(tile, size) == size
    for a, b in itertools.pairwise(starts):
        assert a + min(tile, size) - b >= overlap  # neighbours share at least `overlap` pixels
    covered = torch.zeros(size, size)
    for region in tiling.tiles():
        covered[region] += blend_weights(tiling, region)
    assert bool((covered > 0).all())


def test_blend_weights_are_smooth_and_flat_on_the_image_border():
    tiling = Tiling(40, 40, 16, 8)
    first, middle = tiling.tiles()[0], tiling.tiles()[len(tiling.tiles()) // 2]
    w = blend_weights(tiling, first)
    assert float(w[0, 0]) == 1.0  # the image's corner: no neighbour to blend with
    assert float(w[-1, -1]) < 0.05  # the raised cosine goes to ~0 where the neighbour takes over
    row = blend_weights(tiling, middle)[8]
    assert float((row[1:] - row[:-1]).abs().max()) < 0.25  # no jump anywhere


def test_blending_a_pixelwise_model_gives_the_untiled_prediction():
    conv = torch.nn.Conv2d(6, 3, 1)
    x, cond = torch.randn(1, 3, 37, 29), torch.randn(1, 3, 37, 29)

    def predict(x, cond, t):
        return conv(torch.cat([x, cond], 1))

    seen = []
    tiled = TiledVelocity(predict, Tiling(37, 29, 12, 4), lambda i, n: seen.append((i, n)))
    with torch.no_grad():
        assert torch.allclose(tiled(x, cond, torch.tensor(5)), predict(x, cond, 0), atol=1e-6)
    assert seen[-1][0] == seen[-1][1] == Tiling(37, 29, 12, 4).count > 1


def test_auto_tile_is_four_crops_and_rounds_to_the_patch():
    tiling = latent_tiling(100, 100, EVAL, crop=64, factor=4, multiple=2)
    assert (tiling.tile, tiling.overlap) == (64, 16)
    tiling = latent_tiling(100, 100, EVAL.model_copy(update={"tile": 70, "overlap": 10}), 64, 4, 2)
    assert (tiling.tile, tiling.overlap) == (16, 2)
    assert latent_tiling(100, 80, EVAL.model_copy(update={"tile": "off"}), 64, 4, 2).count == 1


def test_an_image_within_one_tile_samples_exactly_as_untiled_and_tiles_agree(tmp_path):
    trainer = tiny_trainer(tmp_path)  # crop 32: tile auto = 128 px
    ev = Evaluator(trainer, EVAL, tmp_path)
    lr_up = ev.images[0].lr_up
    untiled = Evaluator(trainer, EVAL.model_copy(update={"tile": "off"}), tmp_path).sample(lr_up)
    assert torch.equal(ev.sample(lr_up), untiled)
    tiled = Evaluator(trainer, EVAL.model_copy(update={"tile": 32, "overlap": 16}), tmp_path).sample(lr_up)
    assert tiled.shape == untiled.shape and bool(tiled.isfinite().all())
    assert not torch.equal(tiled, untiled)


def test_tile_settings_at_their_defaults_leave_the_plan_hash_unchanged(tmp_path):
    plain = compile_plan(tiny_plan(tmp_path / "a", extra="eval every=2 steps=2\n"))
    same = compile_plan(tiny_plan(tmp_path / "b", extra="eval every=2 steps=2 tile=auto overlap=auto color_fix=none\n"))
    other = compile_plan(tiny_plan(tmp_path / "c", extra="eval every=2 steps=2 tile=256\n"))
    assert plain.hash == same.hash != other.hash
    assert other.block("eval").tile == 256 and same.block("eval").color_fix == "none"


def test_adain_gives_the_lr_statistics_and_wavelet_removes_a_colour_cast():
    g = torch.Generator().manual_seed(0)
    lr = torch.rand(1, 3, 64, 64, generator=g) * 0.5 - 0.25
    detail = torch.randn(1, 3, 64, 64, generator=g) * 0.05
    cast = torch.tensor([0.3, -0.2, 0.1]).view(1, 3, 1, 1)
    sr = lr + detail + cast
    fixed = adain_fix(sr, lr)
    assert torch.allclose(fixed.mean((-2, -1)), lr.mean((-2, -1)), atol=1e-5)
    assert torch.allclose(fixed.std((-2, -1)), lr.std((-2, -1)), atol=1e-4)
    fixed = wavelet_fix(sr, lr)
    assert float((fixed - lr).mean((-2, -1)).abs().max()) < 1e-3  # the cast is gone
    assert torch.allclose(fixed - lr, detail - low_pass(detail), atol=1e-5)  # detail kept
    assert torch.equal(color_fix(sr, lr, "none"), sr)


def test_the_ddim_step_in_bands_is_the_whole_step_bit_for_bit():
    from ditsr_plan.runtime.train.diffusion import make_scheduler
    from ditsr_plan.runtime.validate.sampler import ddim_step_in_place
    from ditsr_plan.settings.schemas import Diffusion

    sched = make_scheduler("ddim", Diffusion())
    sched.set_timesteps(4)
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(2, 12, 70, 33, generator=g), torch.randn(2, 12, 70, 33, generator=g)
    t = sched.timesteps[1]
    whole = sched.step(v, t, x).prev_sample
    ddim_step_in_place(sched, v, t, x, rows=16)
    assert torch.equal(x, whole)


def test_the_wavelet_fix_in_bands_is_the_whole_images():
    from ditsr_plan.runtime.validate.colorfix import HALO

    g = torch.Generator().manual_seed(1)
    sr, lr = torch.rand(1, 3, 150, 40, generator=g) * 2 - 1, torch.rand(1, 3, 150, 40, generator=g) * 2 - 1
    whole = sr - low_pass(sr) + low_pass(lr)
    assert HALO == 31
    assert torch.allclose(wavelet_fix(sr, lr, band=16), whole, atol=1e-6)
