"""Small things for tests and benchmarks, made here rather than downloaded: a plan with every term kind on
the tiny model, a CPU trainer of a plan, and a randomly initialised ``AutoencoderKL`` saved with
``save_pretrained`` (what ``latent vae path=...`` loads). The test suite's fixtures and ``bench/`` use these.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ALL_TERMS = """\
loss v         vpred     min_snr=5
loss latent_l1 latent_l1
loss lpips     lpips     net=vgg backbone=random
loss edge      edge
loss flat      flat
loss ffl       ffl       mask=edge
loss gan       patchgan  layers=2 ndf=8 r1=10 r1_every=2 d_warmup=2
"""

SETTINGS = """\
model  dit preset=tiny
latent pixel_unshuffle factor=4
data   builtin crop=32 batch=2 scenes=2
pixel  patch=16 margin=4
ema    decay=0.9
run    seed=7 checkpoint_every={ckpt} keep=5
log    {log}
"""


def tiny_plan(
    folder: Path,
    steps: int = 12,
    stages: str | None = None,
    ckpt: int = 6,
    extra: str = "",
    terms: str = ALL_TERMS,
    log: str = "every=1 tensorboard=off",
) -> Path:
    """``folder/tiny.plan``: every term kind on the tiny model; stage A (reconstruction only), then B with
    everything live."""
    half = steps // 2
    stages = stages or (
        f"stage A 0..{half}: v 1; latent_l1 1\nstage B {half}..: lpips 0.3; edge 0.05; flat 0.08; ffl 0.01; gan 0.03\n"
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.plan"
    path.write_text(f"plan tiny\nsteps {steps}\n" + terms + SETTINGS.format(ckpt=ckpt, log=log) + extra + stages)
    return path


def trainer_for(plan: Path, overrides=(), device: str = "cpu"):
    """A trainer of the plan at ``plan``: on CPU in fp32, elsewhere in the plan's ``run precision``."""
    from ditsr_plan.compiler import compile_plan
    from ditsr_plan.runtime.train.device import place
    from ditsr_plan.runtime.train.trainer import Trainer

    graph = compile_plan(plan, overrides=overrides)
    return Trainer(graph, place(device, "fp32" if device == "cpu" else graph.block("run").precision))


def tiny_trainer(folder: Path, **kwargs):
    return trainer_for(tiny_plan(folder, **kwargs))


def make_vae(
    folder: Path, widths: tuple[int, ...] = (8, 16), layers_per_block: int = 1, seed: int = 0, name: str = "vae"
) -> Path:
    """A randomly initialised AutoencoderKL (4 latent channels, downsampling 2^(len(widths)-1)) saved to
    ``folder/name``."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae: Any = AutoencoderKL(  # diffusers: save_pretrained comes from a mixin mypy does not see
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=widths,
        down_block_types=("DownEncoderBlock2D",) * len(widths),
        up_block_types=("UpDecoderBlock2D",) * len(widths),
        layers_per_block=layers_per_block,
        norm_num_groups=min(32, min(widths)),
        sample_size=256,
    )
    vae.save_pretrained(folder / name)
    return folder / name


def make_pixart(
    folder: Path, in_channels: int = 4, out_channels: int = 8, seed: int = 0, name: str = "pixart", **config
) -> Path:
    """A tiny randomly initialised PixArtTransformer2DModel (2 blocks, 16 wide; learned variance like the
    512 px checkpoints: out channels 2 x in) saved to ``folder/name``."""
    import torch
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(seed)
    options = {
        "num_attention_heads": 2,
        "attention_head_dim": 8,
        "num_layers": 2,
        "cross_attention_dim": 16,
        "caption_channels": 8,
        "sample_size": 8,
        "patch_size": 2,
        **config,
    }
    model: Any = PixArtTransformer2DModel(in_channels=in_channels, out_channels=out_channels, **options)
    model.save_pretrained(folder / name)
    return folder / name


def make_dit(folder: Path, in_channels: int = 4, out_channels: int = 8, seed: int = 0) -> Path:
    """A tiny randomly initialised class-conditional DiTTransformer2DModel saved to ``folder/dit``."""
    import torch
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(seed)
    model: Any = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=in_channels,
        out_channels=out_channels,
        num_layers=2,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=10,
    )
    model.save_pretrained(folder / "dit")
    return folder / "dit"


def pretrained_plan(folder: Path, model_line: str, steps: int = 4, ckpt: int = 2, extra: str = "") -> Path:
    """``folder/pretrained.plan``: the tiny VAE latent (made in ``folder``), a model line of your own, every term
    kind (stage A reconstruction only, then everything live), EMA."""
    vae = make_vae(folder)
    half = steps // 2
    path = folder / "pretrained.plan"
    path.write_text(
        f"plan pretrained\nsteps {steps}\n{ALL_TERMS}{model_line}\nlatent vae path={vae}\n"
        "data   builtin crop=32 batch=2 scenes=2\npixel  patch=16 margin=0\nema    decay=0.9\n"
        f"run    seed=7 checkpoint_every={ckpt} keep=5\nlog    every=1 tensorboard=off\n{extra}"
        f"stage A 0..{half}: v 1; latent_l1 1\n"
        f"stage B {half}..: lpips 0.3; edge 0.05; flat 0.08; ffl 0.01; gan 0.03\n"
    )
    return path


def write_photos(folder: Path, names: tuple[str, ...] = ("astronaut", "coffee", "chelsea")) -> Path:
    """scikit-image's photographs as PNGs in ``folder``: a data root of HR images, nothing downloaded."""
    import skimage.data
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(getattr(skimage.data, name)()).save(folder / f"{name}.png")
    return folder


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by its relative path: what a test compares to say "nothing was touched"."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def strict_loads(text: str) -> Any:
    """``json.loads`` that refuses bare ``NaN``/``Infinity``: what the tool's strict JSON files must pass."""
    import json

    def reject(constant: str) -> None:
        raise ValueError(f"bare {constant} in JSON")

    return json.loads(text, parse_constant=reject)


def finished_run_and_pack(root: Path, run_name: str) -> Path:
    """Under ``root``: ``pack/``, a 2-image pack of scikit-image photos, and ``run_name/``, a finished 4-step
    run of the tiny model (v term only, checkpoints at 2 and 4, EMA). Returns the plan."""
    import skimage.data
    from PIL import Image

    from ditsr_plan.cli import main
    from ditsr_plan.compiler import compile_plan
    from ditsr_plan.runtime.run import run_plan

    (root / "hr").mkdir()
    for name in ("astronaut", "coffee"):
        Image.fromarray(getattr(skimage.data, name)()).save(root / "hr" / f"{name}.png")
    assert main(["pack", "make", str(root / "hr"), str(root / "pack"), "--n", "2", "--size", "32", "-q"]) == 0
    plan = tiny_plan(root / "p", steps=4, ckpt=2, terms="loss v vpred\n", stages="stage A 0..: v 1\n")
    run_plan(compile_plan(plan), root / run_name, quiet=True)
    return plan
