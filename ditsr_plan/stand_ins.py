"""Tiny randomly initialised stand-ins for the reference's folders, made here rather than downloaded: a
PixArt transformer and a VAE saved with ``save_pretrained`` (what ``model pixart path=`` and ``latent vae
path=`` load), a DiT, and a folder of scikit-image's photographs. ``ditsr-plan tiny-models`` writes them for
an offline smoke test; the tests and ``bench/`` use them too (through ``ditsr_plan.testing``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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


def write_photos(folder: Path, names: tuple[str, ...] = ("astronaut", "coffee", "chelsea")) -> Path:
    """scikit-image's photographs as PNGs in ``folder``: a data root of HR images, nothing downloaded."""
    import skimage.data
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(getattr(skimage.data, name)()).save(folder / f"{name}.png")
    return folder
