"""The pyramid adapter (``pyramid.py``) and its injection (``injection.py``) built for, and hooked into, a
diffusers PixArtTransformer2DModel."""

from __future__ import annotations

from typing import Any

from torch import nn

from ditsr_plan.settings import schemas

from ..loading import LoadError
from .injection import Injection, attach_injection
from .pyramid import FeaturePyramid, injected_layers


def build_pyramid(
    transformer: Any, settings: schemas.PixartModel, channels: int, width: int
) -> tuple[FeaturePyramid, Injection]:
    """The scripts' adapter for ``transformer`` (``width`` = its inner dim), hooked into its blocks."""
    config = transformer.config
    if config.patch_size != 2 or config.norm_type != "ada_norm_single":
        raise LoadError(
            f"model pixart adapter=pyramid needs a PixArt-alpha transformer with patch 2 and ada_norm_single "
            f"(its heads give the token grid of patch 2), this one has patch {config.patch_size}, "
            f"{config.norm_type}"
        )
    blocks = len(transformer.transformer_blocks)
    try:
        layers = injected_layers(settings.adapter_layers, blocks)
    except ValueError as exc:
        raise LoadError(f"model pixart {exc}") from None
    if not layers:
        raise LoadError(f"model pixart adapter_layers={settings.adapter_layers}: no block of the {blocks} is named")
    pyramid = FeaturePyramid(channels, width, layers, settings.pyramid_width, settings.pyramid_heads)
    injection = Injection(width, layers)
    attach_injection(transformer, injection)
    return pyramid, injection


def has_linear(module: nn.Module, target: str) -> bool:
    """Whether a LoRA target (matched as a suffix of a name, as peft does) names a linear layer of ``module``."""
    linears = [name for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    return any(name == target or name.endswith("." + target) for name in linears)
