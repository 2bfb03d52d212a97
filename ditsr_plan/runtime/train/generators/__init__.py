"""The generator: what predicts the velocity of the noisy HR latent, given the LR latent.

Every kind follows one protocol (what the trainer, the sampler and the checkpoints rely on):

- ``forward(noisy, lr_latent, timesteps, aug_level=None)`` -> the velocity, shaped like ``noisy``;
- ``trainable_parameters()`` (the optimiser's; default every parameter), ``trainable_state_dict()`` (what a
  checkpoint holds; default the whole state), ``save_final(folder)``, ``describe()`` (for the run's header),
  ``fingerprint`` (what identifies a pretrained base, or None) and ``patch_size`` (latent pixels per token
  side; default 1).

Kinds: ``dit`` from scratch (``dit.py``), ``dit``/``pixart`` from a diffusers folder (``pretrained.py``:
LR conditioning, LoRA with peft), ``custom`` (``custom.py``: your own module).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ditsr_plan.compiler.graph import ScheduleGraph
from ditsr_plan.settings.schemas import CustomModel, DitModel, PixartModel

from ..latent import LatentSpace, build_latent


def latent_and_generator(graph: ScheduleGraph, device, note=None) -> tuple[LatentSpace, nn.Module]:
    """The latent space and the generator of ``graph``'s plan, built on ``device`` (a pretrained base loaded
    from the plan's path; the trained weights still to be put in): the one recipe of the trainer, ``export``
    and ``evaluate``. ``note(word)`` hears each slow stage as it begins (a run's console)."""
    note = note or (lambda word: None)
    latent_block, model_block = graph.blocks["latent"], graph.blocks["model"]
    if latent_block.kind == "vae":
        note("loading the VAE ...")
    latent = build_latent(graph.block("latent")).to(device)
    crop = graph.block("data").crop
    if crop % latent.factor:
        raise ValueError(f"data crop {crop} is not a multiple of the latent factor {latent.factor}")
    note(f"building the model ({model_block.kind}) ...")
    origins = graph.blocks["model"].value_origins  # where train_add= & co. are written, for their errors
    model = build_generator(graph.block("model"), latent, crop // latent.factor, crop, device, origins)
    return latent, model.to(device)


def build_generator(
    settings: DitModel | PixartModel | CustomModel,
    latent,
    latent_size: int,
    crop: int,
    device,
    origins: Mapping[str, object] | None = None,
) -> nn.Module:
    """The generator a plan's ``model`` block describes, for ``latent`` (its channels) at ``latent_size``
    (``origins``: the positions of the block's keys, for errors that name them)."""
    if isinstance(settings, DitModel) and settings.path is None:
        from .dit import SRDiT

        return SRDiT(latent.channels, latent_size, settings)
    if isinstance(settings, DitModel | PixartModel):
        from .pretrained import SRTransformer

        kind = "pixart" if isinstance(settings, PixartModel) else "dit"
        return SRTransformer(kind, settings, latent.channels, latent_size, crop, device, origins)
    from .custom import CustomGenerator

    return CustomGenerator(settings, latent.channels, latent_size)


def trainable_parameters(model: nn.Module) -> list[torch.nn.Parameter]:
    own = getattr(model, "trainable_parameters", None)  # a method of the model, if it has one
    if own is not None:
        return list(own())
    return [p for p in model.parameters() if p.requires_grad]


def parameter_groups(model: nn.Module) -> list[dict]:
    """The optimiser's parameter groups: ``{"params", "lr_scale"}`` (a group's lr = the lr knob x lr_scale);
    one group unless the model splits its trainable parameters (a pretrained model's conditioning)."""
    own = getattr(model, "parameter_groups", None)  # a method of the model, if it has one
    if own is not None:
        return [g for g in own() if g["params"]]
    return [{"params": trainable_parameters(model), "lr_scale": 1.0}]


def load_trained(model: nn.Module, tensors: dict[str, torch.Tensor], complete: bool = True) -> str | None:
    """Put a checkpoint's trained tensors into ``model``; what does not fit (None when all does, and nothing
    is loaded otherwise): anything the tensors lack must be frozen (a fine-tune's checkpoint holds only what
    trains; ``complete=False``: any subset, as an EMA's), and every tensor must have its parameter's shape."""
    own = model.state_dict()
    unexpected = sorted(set(tensors) - set(own))
    lacking = sorted(set(trainable_state_dict(model)) - set(tensors)) if complete else []
    if unexpected or lacking:
        return f"missing {lacking[:5]}, unexpected {unexpected[:5]}"
    shapes = [
        f"{k} is {tuple(v.shape)} in the checkpoint, {tuple(own[k].shape)} in the model"
        for k, v in tensors.items()
        if tuple(v.shape) != tuple(own[k].shape)
    ]
    if shapes:
        return "; ".join(shapes[:3]) + (f" and {len(shapes) - 3} more" if len(shapes) > 3 else "")
    model.load_state_dict(tensors, strict=False)
    return None


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    own = getattr(model, "trainable_state_dict", None)  # a method of the model, if it has one
    if own is not None:
        return own()
    return model.state_dict()


def patch_size(model: nn.Module) -> int:
    """The latent pixels per token side: latent sizes must be multiples of it (1 for a model without one)."""
    return int(getattr(model, "patch_size", 1))


def fingerprint(model: nn.Module) -> dict | None:
    return getattr(model, "fingerprint", None)


def describe(model: nn.Module) -> dict:
    own = getattr(model, "describe", None)  # a method of the model, if it has one
    if own is not None:
        return own()
    total = sum(p.numel() for p in model.parameters())
    return {
        "kind": type(model).__name__,
        "parameters": total,
        "trained": sum(p.numel() for p in trainable_parameters(model)),
    }
