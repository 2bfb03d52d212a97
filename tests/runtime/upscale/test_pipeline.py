"""DiTSRPipeline without a run (fast tier): exact sizes for every kind of image, and a saved folder that
loads back to the same image. Runs, exports and the command line: tests/cli/test_upscale.py (slow tier)."""

import numpy as np
import pytest
import torch
from PIL import Image

from ditsr_plan.compiler import compile_plan
from ditsr_plan.runtime.train.generators import latent_and_generator
from ditsr_plan.runtime.upscale.pipeline import DiTSRPipeline, padded_side
from ditsr_plan.settings.schemas import Eval
from ditsr_plan.testing import tiny_plan

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> DiTSRPipeline:
    graph = compile_plan(tiny_plan(tmp_path_factory.mktemp("plan")))
    torch.manual_seed(0)
    latent, model = latent_and_generator(graph, torch.device("cpu"))
    data = graph.block("data")
    return DiTSRPipeline(model, latent, graph.block("diffusion"), Eval(steps=2), data.scale, data.crop)


@pytest.mark.parametrize(("n", "scale", "multiple", "expected"), [(21, 4, 8, 22), (16, 4, 8, 16), (5, 3, 8, 8)])
def test_the_lr_is_padded_to_what_the_model_takes(n, scale, multiple, expected):
    assert padded_side(n, scale, multiple) == expected


def test_every_mode_gives_exactly_scale_x_its_size_in_its_own_mode(pipe):
    rs = np.random.RandomState(0)
    images = {
        "RGB": Image.fromarray((rs.rand(21, 27, 3) * 255).astype("uint8")),
        "L": Image.fromarray((rs.rand(19, 23) * 255).astype("uint8"), "L"),
        "RGBA": Image.fromarray((rs.rand(17, 25, 4) * 255).astype("uint8"), "RGBA"),
        "I;16": Image.fromarray((rs.rand(9, 13) * 65535).astype("uint16")),
    }
    outputs = pipe(list(images.values()), num_inference_steps=1, generator=torch.Generator().manual_seed(1))
    for (mode, image), out in zip(images.items(), outputs, strict=True):
        assert out.size == (4 * image.size[0], 4 * image.size[1]) and out.mode == mode
    alpha = np.asarray(outputs[2].getchannel("A"), dtype=float)
    assert alpha.std() > 10


def test_a_saved_pipeline_loads_back_to_the_same_image(pipe, tmp_path):
    image = Image.fromarray((np.random.RandomState(2).rand(12, 15, 3) * 255).astype("uint8"))
    [before] = pipe(image, num_inference_steps=2, generator=3)
    loaded = DiTSRPipeline.from_pretrained(pipe.save_pretrained(tmp_path / "exp"))
    [after] = loaded(image, num_inference_steps=2, generator=torch.Generator().manual_seed(3))
    assert np.array_equal(np.asarray(before), np.asarray(after))
    [other] = loaded(image, num_inference_steps=2, generator=4)
    assert not np.array_equal(np.asarray(other), np.asarray(after))  # the seed is the generator's
    with pytest.raises(TypeError, match="unknown sampling settings"):
        loaded(image, strength=0.5)


def test_exif_orientation_is_applied_and_bombs_are_refused_from_the_header(tmp_path):
    from ditsr_plan.runtime.train.data import ImageError
    from ditsr_plan.runtime.upscale.images import open_image

    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: show the pixels rotated by 90 degrees
    Image.new("RGB", (30, 10), (200, 10, 10)).save(tmp_path / "turned.jpg", exif=exif)
    with open_image(tmp_path / "turned.jpg") as im:
        assert im.size == (10, 30)
    with pytest.raises(ImageError, match="above the limit"):
        open_image(tmp_path / "turned.jpg", max_pixels=100)


def test_a_saved_pipeline_samples_as_the_run_did(pipe, tmp_path):
    """Every eval setting that decides the sampling travels with the folder: the demo's one trailing step from
    t = 999 without start noise, read back as a leading step at t = 0 from noise, gave a 9 dB image."""
    from ditsr_plan.runtime.upscale.folder import SAMPLING_KEYS

    sampling = Eval(steps=1, spacing="trailing", start_noise=0, guidance_drops="lr", cfg=1.5, lq_init=0)
    assert {"spacing", "start_noise", "guidance_drops"} <= set(SAMPLING_KEYS)
    trailing = DiTSRPipeline(pipe.denoiser, pipe.latent, pipe.diffusion, sampling, pipe.scale, pipe.crop)
    loaded = DiTSRPipeline.from_pretrained(trailing.save_pretrained(tmp_path / "exp"))
    assert (loaded.sampling.spacing, loaded.sampling.start_noise, loaded.sampling.cfg) == ("trailing", 0, 1.5)
    image = Image.fromarray((np.random.RandomState(2).rand(12, 15, 3) * 255).astype("uint8"))
    [before], [after] = trailing(image), loaded(image)
    assert np.array_equal(np.asarray(before), np.asarray(after))
    [leading] = loaded(image, spacing="leading", start_noise=1)  # a sampling setting the caller may change
    assert not np.array_equal(np.asarray(leading), np.asarray(after))
