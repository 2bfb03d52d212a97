"""Degradations: recipes drawn from the sample's generator, applied on any device; the CPU path (libjpeg)
and the device path (kornia's JPEG) agree; the ranges of the plan's degrade block are the ones drawn."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ditsr_plan.runtime.seeds import generator
from ditsr_plan.runtime.train.data import TrainingData, builtin_images
from ditsr_plan.runtime.train.degradation import apply, degrade_batch, draw, sinc_kernel
from ditsr_plan.settings.schemas import BicubicDegrade, BuiltinData, HighorderDegrade, RealesrganDegrade

torch.set_num_threads(2)
HIGHORDER = HighorderDegrade()
REALESRGAN = RealesrganDegrade()
AGREEMENT_DB = 33.0  # libjpeg vs kornia's JPEG, after every other op identical (measured on these crops: 36-50 dB)


def _photo(size: int = 128) -> torch.Tensor:
    _, image = builtin_images(0)[0]  # astronaut
    return image[None, :, 100 : 100 + size, 150 : 150 + size].contiguous()


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) / 2).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


@pytest.mark.parametrize("settings", [HIGHORDER, REALESRGAN], ids=["highorder", "realesrgan"])
def test_a_recipe_is_a_function_of_the_samples_generator(settings):
    hr = _photo()
    a = apply(draw(settings, generator(1, "data", 5, 0, 0), (128, 128), 4), hr)
    b = apply(draw(settings, generator(1, "data", 5, 0, 0), (128, 128), 4), hr)
    c = apply(draw(settings, generator(1, "data", 5, 0, 1), (128, 128), 4), hr)
    assert a.shape == (1, 3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("settings", [HIGHORDER, REALESRGAN], ids=["highorder", "realesrgan"])
def test_the_cpu_and_the_device_path_agree(settings):
    """Same seed, step and index -> the same LR whether made in a worker (libjpeg) or batched on the
    device (kornia's JPEG): every op but the codec is the same torch code; the codecs differ by rounding."""
    hr = torch.cat([_photo()] * 6)
    recipes = [draw(settings, generator(3, "data", 0, 0, i), (128, 128), 4) for i in range(6)]
    device = degrade_batch(hr, recipes, "kornia")
    for i, recipe in enumerate(recipes):
        cpu = F.interpolate(apply(recipe, hr[i : i + 1], "pil"), size=(128, 128), mode="bicubic").clamp(-1, 1)
        assert _psnr(cpu, device[i : i + 1]) > AGREEMENT_DB, (i, [op.name for op in recipe.ops])


def test_training_data_on_the_device_gives_the_workers_lr(tmp_path):
    settings = BuiltinData(crop=64, scale=4, batch=3, degrade="highorder", scenes=1, workers=0)
    cpu = TrainingData(settings, 7, HighorderDegrade(on="cpu"))
    dev = TrainingData(settings, 7, HighorderDegrade(on="device"))
    a, b = cpu.batch(4), dev.batch(4)
    assert torch.equal(a.hr, b.hr) and b.lr_up is None and len(b.recipes) == 3
    made = dev.lr_up(b, b.hr)
    assert made.shape == a.lr_up.shape
    assert all(_psnr(a.lr_up[i : i + 1], made[i : i + 1]) > AGREEMENT_DB for i in range(3))
    auto = TrainingData(settings, 7, HighorderDegrade(on="auto"), device_type="cuda")
    assert auto.on_device and not TrainingData(settings, 7, HighorderDegrade(on="auto")).on_device


def test_bicubic_is_the_antialiased_bicubic_down_and_up():
    hr = _photo(64)
    lr = apply(draw(BicubicDegrade(), generator(0), (64, 64), 4), hr)
    expected = F.interpolate(hr, size=(16, 16), mode="bicubic", antialias=True, align_corners=False).clamp(-1, 1)
    assert torch.equal(lr, expected)


def test_highorder_draws_the_reference_ranges():
    """shared/reference-setup.md: kernels 7..21, resize 0.3..1.8 (nearest/bilinear/bicubic), noise std
    0..0.05, JPEG 30..95, a second stage with probability 0.35, then bicubic to 1/4."""
    sizes, qualities, stages, modes = set(), [], [], set()
    for i in range(400):
        recipe = draw(HIGHORDER, generator(0, "d", i), (128, 128), 4)
        ops = recipe.ops
        sizes |= {op.kernel.shape[-1] for op in ops if op.name == "blur"}
        qualities += [op.quality for op in ops if op.name == "jpeg"]
        assert all(0 <= op.std <= 0.05 for op in ops if op.name == "noise")
        modes |= {op.mode for op in ops[:-1] if op.name == "resize"}
        stages.append(sum(op.name == "jpeg" for op in ops))
        assert ops[-1].name == "resize" and ops[-1].size == (32, 32) and ops[-1].mode == "bicubic"
    assert sizes == set(range(7, 22, 2))
    assert min(qualities) >= 30 and max(qualities) <= 95 and max(qualities) > 90 and min(qualities) < 35
    assert modes == {"nearest", "bilinear", "bicubic"}
    second = sum(s == 2 for s in stages) / len(stages)
    assert 0.28 < second < 0.42  # 0.35


def test_realesrgan_kernels_and_order():
    k = sinc_kernel(21, math.pi / 3)
    assert abs(float(k.sum()) - 1) < 1e-6 and torch.allclose(k, k.flip(0)) and torch.allclose(k, k.T)
    assert float(k.min()) < 0  # a sinc rings: negative lobes, unlike any Gaussian
    firsts, tails = set(), set()
    for i in range(200):
        ops = draw(REALESRGAN, generator(1, "d", i), (128, 128), 4).ops
        firsts.add(ops[0].name)
        tails.add(tuple(op.name for op in ops[-3:]))
        assert [op for op in ops if op.name == "resize"][-1].size == (32, 32)
    assert firsts == {"blur"}
    # the final resize + sinc and the JPEG, in both orders (sinc skipped with probability 0.2)
    assert ("resize", "blur", "jpeg") in tails and ("jpeg", "resize", "blur") in tails


def test_degrade_settings_are_checked_in_the_plan(write_plan):
    from ditsr_plan.compiler import compile_plan
    from ditsr_plan.diagnostics import PlanError

    base = "plan p\nsteps 10\nloss v vpred\n{}\nstage A 0..: v 1\n"
    graph = compile_plan(write_plan(base.format("data builtin\ndegrade realesrgan jpeg=40,90")))
    assert graph.blocks["degrade"].kind == "realesrgan" and list(graph.blocks["degrade"].values["jpeg"]) == [40, 90]
    assert graph.blocks["data"].values["degrade"] == "realesrgan"
    assert compile_plan(write_plan(base.format("data builtin degrade=highorder"))).blocks["degrade"].values[
        "second"
    ] == pytest.approx(0.35)
    for text, message in [
        ("data builtin degrade=bicubic\ndegrade highorder", "data degrade=bicubic and the degrade block"),
        ("degrade highorder noise=0.1,0.01", "invalid value '0.1,0.01' for 'noise': the low end is above the high end"),
        ("degrade highorder jpeg=0,90", "invalid value '0,90' for 'jpeg': both ends must lie in [1, 100]"),
        ("degrade realesrgan resize_probs=0.5,0.5,0.5", "probabilities >= 0 that sum to 1"),
        ("degrade highorder resize_modes=cubic", "resize_modes"),
    ]:
        with pytest.raises(PlanError) as err:
            compile_plan(write_plan(base.format(text)))
        assert message in str(err.value), str(err.value)
        if "=" in text.split()[-1]:  # a bad value is pointed at, not its block
            key, _, value = text.split()[-1].partition("=")
            (found,) = err.value.diagnostics
            assert found.pos.col == text.splitlines()[-1].index(value) + 1 and key in found.message


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_device_path_on_cuda_matches_it_on_the_cpu():
    hr = torch.cat([_photo()] * 4)
    recipes = [draw(REALESRGAN, generator(3, "data", 0, 0, i), (128, 128), 4) for i in range(4)]
    cpu = degrade_batch(hr, recipes, "kornia")
    cuda = degrade_batch(hr.cuda(), recipes, "kornia").cpu()
    assert float((cpu - cuda).abs().max()) < 2e-2 and _psnr(cpu, cuda) > 50
