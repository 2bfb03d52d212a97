"""Telling the generator how much noise the LR latent was augmented with (the reference's ``aug_level``).

The LR latent gets Gaussian noise of a random std (``diffusion lr_noise``) during training and none at
validation; a model that is not told the level cannot tell augmentation noise from image content. The
level (the std, as the reference does scaled by 1000 before its sinusoidal embedding) is embedded like a
timestep and **added to the generator's timestep embedding**, so it reaches every adaLN modulation:

    e(level) = MLP(sinusoid(1000 level)) - MLP(sinusoid(0))

``e(0) = 0`` by construction, and the MLP's last layer starts at zero: at step 0 the generator is the
model without augmentation conditioning, and at validation (level 0) a trained generator is exactly the
transformer alone -- the folder saved with ``save_pretrained`` reproduces it without this module.

The embedding is attached with forward hooks on the transformer's timestep-embedding module(s): a
pre-hook takes the levels out of the call's arguments (where the model wrapper put them) and a hook adds
``e(level)`` to the module's output. Both see the same call, so activation checkpointing's recomputation
adds the same embedding.
"""

from __future__ import annotations

import torch
from torch import nn


class AugLevelEmbedding(nn.Module):
    """Noise level (N values, the std of the LR-latent noise) -> N x ``dim``, exactly 0 at level 0."""

    def __init__(self, dim: int):
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        self.proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=1)
        self.mlp = TimestepEmbedding(256, dim)
        nn.init.zeros_(self.mlp.linear_2.weight)
        nn.init.zeros_(self.mlp.linear_2.bias)

    def forward(self, level: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        levels = torch.cat([level.float().flatten() * 1000, level.new_zeros(1, dtype=torch.float32)])
        out = self.mlp(self.proj(levels).to(self.mlp.linear_1.weight.dtype))
        return (out[:-1] - out[-1:]).to(dtype)


def attach(embedding_modules: list[nn.Module], aug: AugLevelEmbedding, take_levels) -> None:
    """Add ``aug(levels)`` to the output of each module in ``embedding_modules``. ``take_levels(args, kwargs)``
    returns ``(levels, args, kwargs)``: the levels the wrapper put into the call, and the call without them."""

    def before(module, args, kwargs):
        levels, args, kwargs = take_levels(args, kwargs)
        module._aug_levels = levels  # read by after() in the same call
        return args, kwargs

    def after(module, args, kwargs, output):
        levels = module._aug_levels
        module._aug_levels = None
        return output + aug(levels, output.dtype)

    for module in embedding_modules:
        module._aug_levels = None  # type: ignore[assignment]  # torch types Module attributes as tensors/modules
        module.register_forward_pre_hook(before, with_kwargs=True)
        module.register_forward_hook(after, with_kwargs=True)
