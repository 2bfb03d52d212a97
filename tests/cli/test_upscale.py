"""ditsr-plan upscale and DiTSRPipeline on the tiny models: exact sizes for every kind of image, folders, the
same image from the CLI and from Python, and hostile models, inputs and outputs. On a demo model trained
for a minute (tiled against untiled, seams): test_upscale_demo.py, in the slow tier."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ditsr_plan.cli import main
from ditsr_plan.settings.schemas import Eval
from ditsr_plan.testing import finished_run_and_pack, make_pixart, pretrained_plan, trainer_for

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run of the tiny DiT (the demo's kind of model: from scratch, pixel-unshuffle latent, the LR
    latent's 3x3 context beside its input) and its export."""
    root = tmp_path_factory.mktemp("upscale")
    finished_run_and_pack(root, "run", overrides=("model.lr_context=8",))
    assert (root / "run" / "final" / "generator_ema" / "lr_context.safetensors").is_file()
    assert main(["export", str(root / "run"), "--merge", str(root / "exported"), "-q"]) == 0
    spec = json.loads((root / "exported" / "sr_pipeline.json").read_text())["transformer"]
    assert spec["lr_context"] == 8
    return root


def _images(folder: Path) -> dict[str, tuple[int, int]]:
    rs = np.random.RandomState(0)
    (folder / "sub" / "deeper").mkdir(parents=True)
    Image.fromarray((rs.rand(21, 27, 3) * 255).astype("uint8")).save(folder / "odd.png")
    Image.fromarray((rs.rand(19, 23) * 255).astype("uint8"), "L").save(folder / "sub" / "gray.png")
    Image.fromarray((rs.rand(17, 25, 4) * 255).astype("uint8"), "RGBA").save(folder / "sub" / "deeper" / "rgba.png")
    Image.fromarray((rs.rand(16, 20) * 65535).astype("uint16")).save(folder / "deep16.png")
    return {"odd.png": (27, 21), "sub/gray.png": (23, 19), "sub/deeper/rgba.png": (25, 17), "deep16.png": (20, 16)}


def test_every_kind_of_image_gives_exactly_4x_and_folders_keep_sub_folders(finished, tmp_path, capsys):
    sizes = _images(tmp_path / "in")
    (tmp_path / "in" / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert main(["upscale", str(finished / "run"), str(tmp_path / "in"), "-o", str(out), "--steps", "2"]) == 1
    err = capsys.readouterr()
    assert "broken.png: skipped" in err.err and "skipped 1: " in err.out and "wrote 4 images" in err.out
    assert "tiles of 128 px overlapping 32 px" in err.err  # the header says the tile size
    assert "odd.png: 27 x 21 -> 108 x 84, 2 tiles of 88 px" in err.err  # each image its tiles (square: a DiT)
    modes = {"odd.png": "RGB", "sub/gray.png": "L", "sub/deeper/rgba.png": "RGBA", "deep16.png": "I;16"}
    for name, (w, h) in sizes.items():
        with Image.open(out / name) as im:
            assert im.size == (4 * w, 4 * h) and im.mode == modes[name], name
    with Image.open(out / "sub" / "deeper" / "rgba.png") as im:
        alpha = np.asarray(im.getchannel("A"), dtype=float)
    assert alpha.std() > 10  # the alpha channel was upscaled, not dropped or made opaque
    before = (out / "odd.png").read_bytes()
    (out / "odd.png").write_bytes(b"mine")
    assert main(["upscale", str(finished / "run"), str(tmp_path / "in" / "odd.png"), "-o", str(out), "-q"]) == 0
    assert (out / "odd.png").read_bytes() == b"mine"  # kept without --overwrite
    argv = ["upscale", str(finished / "run"), str(tmp_path / "in" / "odd.png"), "-o", str(out), "--steps", "2"]
    assert main([*argv, "--overwrite", "-q"]) == 0
    assert (out / "odd.png").read_bytes() == before  # deterministic


def test_scale_suffix_and_ext_name_and_size_the_outputs(finished, tmp_path, capsys):
    _images(tmp_path / "in")
    argv = ["upscale", str(finished / "exported"), str(tmp_path / "in" / "odd.png"), "-o", str(tmp_path / "o")]
    assert main([*argv, "--scale", "2.5", "--suffix", "_x", "--ext", "jpg", "--steps", "1"]) == 0
    with Image.open(tmp_path / "o" / "odd_x.jpg") as im:
        assert im.size == (round(27 * 2.5), round(21 * 2.5)) and im.format == "JPEG"
    err = capsys.readouterr().err
    assert "27 x 21 -> 68 x 52 (x4 resized to x2.5)" in err and "alpha" not in err  # the size written
    rgba = str(tmp_path / "in" / "sub" / "deeper" / "rgba.png")
    assert main(["upscale", str(finished / "exported"), rgba, "-o", str(tmp_path / "j"), "--ext", "jpg"]) == 0
    assert "rgba.png: its alpha channel is dropped: JPEG has none" in capsys.readouterr().err
    odd = str(tmp_path / "in" / "odd.png")
    assert main(["upscale", str(finished / "exported"), odd, "-o", str(tmp_path / "t"), "--tile", "off"]) == 0
    assert "2 tiles of 88 px (tiles off, but this DiT takes square latents only)" in capsys.readouterr().err


def test_the_pipeline_and_the_cli_give_the_same_image_for_the_demo_dit(finished, tmp_path):
    from ditsr_plan.pipeline import DiTSRPipeline

    _images(tmp_path / "in")
    pipe = DiTSRPipeline.from_pretrained(finished / "exported")
    with Image.open(tmp_path / "in" / "odd.png") as im:
        [ours] = pipe(im, num_inference_steps=2, generator=torch.Generator().manual_seed(5))
    argv = ["upscale", str(finished / "exported"), str(tmp_path / "in" / "odd.png"), "-o", str(tmp_path / "o")]
    assert main([*argv, "--steps", "2", "--seed", "5", "-q"]) == 0
    with Image.open(tmp_path / "o" / "odd.png") as cli:
        assert np.array_equal(np.asarray(cli), np.asarray(ours))
    # the export samples as the run itself does (EMA weights of its last checkpoint = its final weights)
    run_pipe = DiTSRPipeline.from_run(finished / "run")
    with Image.open(tmp_path / "in" / "odd.png") as im:
        [from_run] = run_pipe(im, num_inference_steps=2, generator=5)
    assert np.array_equal(np.asarray(from_run), np.asarray(ours))
    saved = pipe.save_pretrained(tmp_path / "again")
    assert json.loads((saved / "sr_pipeline.json").read_text())["transformer"]["kind"] == "dit"


def test_the_pipeline_and_the_cli_give_the_same_image_for_a_tiny_pixart_export(tmp_path):
    from ditsr_plan.pipeline import DiTSRPipeline
    from ditsr_plan.runtime.upscale.pipeline import DiTSRPipeline as Direct

    base = make_pixart(tmp_path)
    plan = pretrained_plan(tmp_path, f"model pixart path={base} lora=4 cond=concat+adapter")
    trainer = trainer_for(plan)
    with torch.no_grad():  # a trained-looking adapter and input layer: not the identity of step 0
        for p in trainer.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    graph, data = trainer.graph, trainer.graph.block("data")
    pipe = Direct(trainer.model, trainer.latent, graph.block("diffusion"), Eval(), data.scale, data.crop)
    image = Image.fromarray((np.random.RandomState(1).rand(13, 11, 3) * 255).astype("uint8"))
    [direct] = pipe(image, num_inference_steps=2, generator=1)
    pipe.save_pretrained(tmp_path / "exp")
    loaded = DiTSRPipeline.from_pretrained(tmp_path / "exp")
    [ours] = loaded(image, num_inference_steps=2, generator=1)
    image.save(tmp_path / "in.png")
    assert main(["upscale", str(tmp_path / "exp"), str(tmp_path / "in.png"), "-o", str(tmp_path / "o"),
                 "--steps", "2", "--seed", "1", "-q"]) == 0  # fmt: skip
    with Image.open(tmp_path / "o" / "in.png") as cli:
        assert np.array_equal(np.asarray(cli), np.asarray(ours))
    assert ours.size == (44, 52)
    diff = np.abs(np.asarray(direct, dtype=float) - np.asarray(ours, dtype=float))
    assert diff.max() <= 1  # the exported folder is the trained generator (LoRA merged: rounding only)
    # tiled: 16 px tiles, the VAE's encode and decode tiled by diffusers too
    assert loaded.tiles(11, 13, loaded.settings(tile=16, overlap=8))[1] > 4
    [tiled] = loaded(image, num_inference_steps=2, generator=1, tile=16, overlap=8)
    assert tiled.size == ours.size and np.asarray(tiled).std() > 0
    # a VAE weight file planted as a link (to a file outside the folder) is refused, not followed
    weights = next((tmp_path / "exp" / "vae").glob("*.safetensors"))
    outside = tmp_path / "elsewhere.safetensors"
    weights.rename(outside)
    weights.symlink_to(outside)
    with pytest.raises(Exception, match="is a symbolic link"):
        DiTSRPipeline.from_pretrained(tmp_path / "exp")


def test_import_ditsr_plan_stays_torch_free_and_the_pipeline_has_its_public_module():
    code = (
        "import sys, ditsr_plan; assert 'torch' not in sys.modules; from ditsr_plan.pipeline import DiTSRPipeline; "
        "print(DiTSRPipeline.__module__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ditsr_plan.runtime.upscale.pipeline", done.stderr


def test_hostile_outputs_and_models_are_refused_in_words(finished, tmp_path, capsys):
    _images(tmp_path / "in")
    (tmp_path / "file").write_text("x")
    assert main(["upscale", str(finished / "run"), str(tmp_path / "in"), "-o", str(tmp_path / "file")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["upscale", str(tmp_path / "in"), str(tmp_path / "in"), "-o", str(tmp_path / "o")]) == 2
    assert "neither an exported pipeline" in capsys.readouterr().err
    bad = Path(shutil.copytree(finished / "exported", tmp_path / "bad"))
    (bad / "sr_pipeline.json").write_text((bad / "sr_pipeline.json").read_text().replace('"scale": 4', '"scale": NaN'))
    assert main(["upscale", str(bad), str(tmp_path / "in"), "-o", str(tmp_path / "o")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    shutil.copy(finished / "exported" / "sr_pipeline.json", bad / "sr_pipeline.json")
    config = json.loads((bad / "transformer" / "config.json").read_text())
    (bad / "transformer" / "config.json").write_text(json.dumps({**config, "num_layers": 10**30}))
    assert main(["upscale", str(bad), str(tmp_path / "in"), "-o", str(tmp_path / "o")]) == 2
    assert "num_layers" in capsys.readouterr().err
    (bad / "transformer" / "config.json").unlink()
    (bad / "transformer" / "config.json").symlink_to(finished / "exported" / "transformer" / "config.json")
    assert main(["upscale", str(bad), str(tmp_path / "in"), "-o", str(tmp_path / "o")]) == 2
    assert "symbolic link" in capsys.readouterr().err
    odd_tiles = (["--tile", "x"], ["--tile", "8"], ["--tile", "64", "--overlap", "64"])
    for argv in (["--steps", "0"], ["--lq-init", "2"], ["--scale", "8"], ["--device", "gpu"], *odd_tiles):
        with pytest.raises(SystemExit) if argv[:2] in (["--tile", "x"], ["--tile", "8"]) else _nothing():
            code = main(["upscale", str(finished / "exported"), str(tmp_path / "in"), "-o", str(tmp_path / "o"), *argv])
            assert code == 2, argv
    assert "--overlap 64: tiles of 64 px overlap by less than a tile" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_an_out_folder_inside_the_input_folder_is_never_read_as_input(finished, tmp_path, capsys):
    _images(tmp_path / "in")
    out = tmp_path / "in" / "up"
    argv = ["upscale", str(finished / "exported"), str(tmp_path / "in"), "-o", str(out), "--steps", "1", "-q"]
    assert main(argv) == 0
    assert main(argv) == 0  # again: the outputs are not inputs, and existing ones are kept
    assert "wrote 0 images" in capsys.readouterr().out
    assert not (out / "up").exists()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_planted_links_suffix_paths_and_inputs_inside_out_are_refused(finished, tmp_path, capsys):
    """An attacker's review: a link planted at the old temporary name was followed (any file overwritten), a
    --suffix with a '/' wrote outside OUT, an input inside OUT was replaced by its own upscale, '' meant '.'."""
    _images(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    for pid in range(os.getpid() - 5, os.getpid() + 50):  # the old, predictable name, for any process nearby
        (out / f".odd.png.{pid}.tmp").symlink_to(victim)
    model = str(finished / "exported")
    argv = ["upscale", model, str(tmp_path / "in" / "odd.png"), "-o", str(out), "--steps", "1", "-q"]
    assert main(argv) == 0
    assert victim.read_text() == "mine" and not (out / "odd.png").is_symlink()
    assert (out / "odd.png").stat().st_mode & 0o077 == 0o666 & ~_umask() & 0o077  # readable as the umask allows
    assert main([*argv, "--suffix", "/../../x"]) == 2
    assert "without a folder separator" in capsys.readouterr().err and not (tmp_path / "x.png").exists()
    own = out / "odd.png"
    before = own.read_bytes()
    assert main(["upscale", model, str(own), "-o", str(out), "--overwrite", "--steps", "1", "-q"]) == 2
    assert "its output would replace it" in capsys.readouterr().err and own.read_bytes() == before
    assert main(["upscale", model, str(own), "-o", "", "-q"]) == 2
    assert "an empty path" in capsys.readouterr().err


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_an_image_that_cannot_be_used_or_written_is_skipped_and_the_rest_are_done(finished, tmp_path, capsys):
    """An attacker's review: a float TIFF of NaN, or an output path that is a file's, aborted the whole batch."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(np.full((12, 12), np.nan, dtype=np.float32), "F").save(folder / "nan.tif")
    Image.fromarray((np.random.RandomState(0).rand(12, 12, 3) * 255).astype("uint8")).save(folder / "z.png")
    Image.fromarray((np.random.RandomState(1).rand(12, 12, 3) * 255).astype("uint8")).save(folder / "sub" / "y.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("a file where the sub-folder would go")
    assert main(["upscale", str(finished / "exported"), str(folder), "-o", str(out), "--steps", "1"]) == 1
    done = capsys.readouterr()
    assert "nan.tif: skipped (its samples are not all finite" in done.err and "y.png: skipped (" in done.err
    assert "wrote 1 image" in done.out and (out / "z.png").is_file()


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (lambda d: d["transformer"].pop("lr_context"), "takes 104 input channels, the description gives it 96"),
        (lambda d: d["latent"].update(factor=2), "transformer.channels=48 but the latent has 12 channels"),
        (lambda d: d["transformer"].update(concat=False), "the description gives it 56"),
        (lambda d: d["transformer"].update(class_label=5), "class_label=5 is not one of the transformer's"),
    ],
)
def test_a_description_that_does_not_fit_its_folder_is_refused_before_sampling(finished, tmp_path, capsys, edit, said):
    folder = tmp_path / "tampered"
    shutil.copytree(finished / "exported", folder)
    description = json.loads((folder / "sr_pipeline.json").read_text())
    edit(description)
    (folder / "sr_pipeline.json").write_text(json.dumps(description))
    _images(tmp_path / "in")
    argv = ["upscale", str(folder), str(tmp_path / "in" / "odd.png"), "-o", str(tmp_path / "o"), "--steps", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "does not describe this folder" in err and said in err and "internal error" not in err


def test_sampling_below_the_trained_timesteps_is_told(finished, tmp_path, capsys):
    """A model trained from diffusion t_min up (the demo's): a sampler that ends below t_min is warned about."""
    folder = tmp_path / "high_t"
    shutil.copytree(finished / "exported", folder)
    description = json.loads((folder / "sr_pipeline.json").read_text())
    description["diffusion"]["t_min"] = 900
    description["sampling"].update(steps=1, spacing="trailing", start_noise=0, lq_init=0)
    (folder / "sr_pipeline.json").write_text(json.dumps(description))
    _images(tmp_path / "in")
    argv = ["upscale", str(folder), str(tmp_path / "in" / "odd.png"), "-o", str(tmp_path / "o"), "--overwrite"]
    assert main(argv) == 0
    assert "never trained there" not in capsys.readouterr().err  # one trailing step from t = 999
    assert main([*argv, "--steps", "2"]) == 0
    err = capsys.readouterr().err
    assert "warning: the sampler (2 steps, trailing spacing) ends at timestep 499, below diffusion t_min=900" in err
    assert "leave --steps at the model's 1" in err and "UntrainedTimestepsWarning" not in err  # said once, in words
    from ditsr_plan.pipeline import DiTSRPipeline
    from ditsr_plan.runtime.upscale.pipeline import UntrainedTimestepsWarning

    pipe = DiTSRPipeline.from_pretrained(folder)
    untrained = pytest.warns(UntrainedTimestepsWarning, match="ends at timestep 499, below diffusion t_min=900")
    with Image.open(tmp_path / "in" / "odd.png") as im, untrained:
        pipe(im, num_inference_steps=2)


def _drop(file: Path) -> None:
    file.unlink()


def _add_evil(file: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(file))
    save_file({**tensors, "evil": torch.zeros(1)}, str(file))


def _integral(file: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(file))
    save_file({**tensors, "lr_context.bias": tensors["lr_context.bias"].long()}, str(file))


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (_drop, "sr_conditioning.safetensors is missing: it holds the lr_context convolution"),
        (_add_evil, "holds tensors no pipeline writes: evil"),
        (_integral, "lr_context.bias should hold floating-point numbers"),
    ],
)
def test_a_conditioning_file_that_is_missing_or_odd_is_refused_in_words(finished, tmp_path, capsys, edit, said):
    folder = tmp_path / "tampered"
    shutil.copytree(finished / "exported", folder)
    edit(folder / "sr_conditioning.safetensors")
    _images(tmp_path / "in")
    argv = ["upscale", str(folder), str(tmp_path / "in" / "odd.png"), "-o", str(tmp_path / "o"), "--steps", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert said in err and "internal error" not in err
