"""Small things for tests and benchmarks, made here rather than downloaded: a plan with every term kind on
the tiny model, a CPU trainer of a plan, and a randomly initialised ``AutoencoderKL`` saved with
``save_pretrained`` (what ``latent vae path=...`` loads). The test suite's fixtures and ``bench/`` use these.
"""

from __future__ import annotations

from pathlib import Path

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
    """A trainer of the plan at ``plan`` (CPU, fp32 by default)."""
    from ditsr_plan.compiler import compile_plan
    from ditsr_plan.runtime.train.device import place
    from ditsr_plan.runtime.train.trainer import Trainer

    return Trainer(compile_plan(plan, overrides=overrides), place(device, "fp32" if device == "cpu" else "auto"))


def tiny_trainer(folder: Path, **kwargs):
    return trainer_for(tiny_plan(folder, **kwargs))


def make_vae(folder: Path, widths: tuple[int, ...] = (8, 16), layers_per_block: int = 1, seed: int = 0) -> Path:
    """A randomly initialised AutoencoderKL (4 latent channels, downsampling 2^(len(widths)-1)) saved to
    ``folder/vae``."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(
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
    vae.save_pretrained(folder / "vae")
    return folder / "vae"
