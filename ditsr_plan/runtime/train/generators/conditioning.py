"""LR conditioning of a pretrained transformer: the LR latent as extra input channels (``concat``), and/or a
small convolutional encoder whose per-block features are added to the hidden states (``adapter``).

Both start as the identity: at step 0 the model's output equals the base model's.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn


def widen_patch_embedding(conv: nn.Conv2d, extra: int) -> nn.Conv2d:
    """The patch-embedding convolution with ``extra`` more input channels whose weights are 0 (so the output
    is unchanged for any value of them); the existing weights and the bias are kept."""
    # torch types a Conv2d's kernel_size/stride/padding as tuples of any length; a Conv2d's are pairs
    wider = nn.Conv2d(
        conv.in_channels + extra,
        conv.out_channels,
        cast(tuple[int, int], conv.kernel_size),
        cast(tuple[int, int], conv.stride),
        cast("str | tuple[int, int]", conv.padding),
        bias=conv.bias is not None,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        wider.weight.zero_()
        wider.weight[:, : conv.in_channels] = conv.weight
        if conv.bias is not None and wider.bias is not None:
            wider.bias.copy_(conv.bias)
    return wider


class LRAdapter(nn.Module):
    """The reference's LR adapter: convolutions encode the LR latent to the transformer's token grid, and one
    zero-initialised linear projection per block gives the features added to that block's input tokens."""

    def __init__(self, channels: int, width: int, patch: int, blocks: int, inner_dim: int):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, width, patch, stride=patch),
        )
        projections = [nn.Linear(width, inner_dim) for _ in range(blocks)]
        for projection in projections:
            nn.init.zeros_(projection.weight)
            nn.init.zeros_(projection.bias)
        self.projections = nn.ModuleList(projections)

    def forward(self, lr_latent: torch.Tensor) -> list[torch.Tensor]:
        tokens = self.encoder(lr_latent).flatten(2).transpose(1, 2)  # N x tokens x width
        return [projection(tokens) for projection in self.projections]


def attach_adapter(blocks: nn.ModuleList, holder) -> None:
    """Before block i runs, add ``holder.adapter_features[i]`` to its input tokens (when the holder has
    features for this call). A pre-hook reads the features the wrapper computed in its forward; activation
    checkpointing reruns the hook with the same features (its backward comes before the next forward)."""

    def make(i: int):
        def before(module, args, kwargs):
            features = holder.adapter_features
            if features is None:
                return None
            hidden = args[0] if args else kwargs["hidden_states"]
            hidden = hidden + features[i].to(hidden.dtype)
            if args:
                return (hidden, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": hidden}

        return before

    for i, block in enumerate(blocks):
        block.register_forward_pre_hook(make(i), with_kwargs=True)
