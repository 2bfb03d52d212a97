"""A DiT trained from scratch: diffusers' DiTTransformer2DModel with the LR latent as extra input channels.

The model block's preset is resolved by the compiler (depth, heads and head_dim are in the graph)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ditsr_plan.settings.schemas import DitModel

from .aug_level import AugLevelEmbedding, attach

LR_CONTEXT_FILE = "lr_context.safetensors"  # beside the DiT's diffusers files in a run's final folder


def lr_context_conv(channels: int, width: int) -> nn.Conv2d:
    """``model dit lr_context=N``: a 3x3 convolution of the LR latent's ``channels`` into ``N`` channels that
    join the DiT's input (edges replicated, so a tile's border sees no made-up zeros)."""
    return nn.Conv2d(channels, width, 3, padding=1, padding_mode="replicate")


def _dit_levels(args: tuple, kwargs: dict):
    """The DiT's timestep embedding is called as ``emb(timestep, class_labels, hidden_dtype=...)``: the
    wrapper passes the augmentation levels as the class labels; the real label is a constant 0."""
    timestep, levels = args[0], args[1]
    return levels, (timestep, torch.zeros(levels.shape[0], dtype=torch.long, device=levels.device)), kwargs


def zero_modulation_and_output(dit: nn.Module) -> None:
    """The DiT paper's adaLN-Zero initialisation (Peebles & Xie 2023, section 3.2): every block's adaLN
    modulation (shift, scale and gate) and the final layer's modulation and projection start at 0, so each
    block starts as the identity and the first prediction is 0. diffusers initialises them at random: a
    random first prediction that the model first learns to switch off, often by closing its output's
    modulation, which stalls the learning of small targets (the demo's residual over the LR)."""
    blocks: Any = dit.transformer_blocks
    modules = [block.norm1.linear for block in blocks] + [dit.proj_out_1, dit.proj_out_2]
    with torch.no_grad():
        for linear in modules:
            for tensor in linear.parameters():
                tensor.zero_()


class SRDiT(nn.Module):
    """Predicts the velocity of the noisy HR latent, conditioned on the LR latent and its augmentation level.

    Input channels = 2 x latent channels (noisy latent, LR latent concatenated); output channels =
    latent channels. The DiT's class conditioning carries nothing (every sample gets class 0, never
    dropped); the LR augmentation level is added to the timestep embedding (``aug_level.py``).
    """

    def __init__(self, latent_channels: int, sample_size: int, settings: DitModel):
        super().__init__()
        from ..diffusers_import import model_class

        DiTTransformer2DModel = model_class("diffusers.models.transformers.dit_transformer_2d", "DiTTransformer2DModel")

        self.settings = settings
        self.patch_size = settings.patch
        depth, heads, head_dim = settings.depth, settings.heads, settings.head_dim
        assert depth and heads and head_dim, "the compiler resolves the preset of a DiT from scratch"
        # lr_context=N: a 3x3 convolution over the LR latent whose N channels join the DiT's input, so that a
        # token sees its neighbours' LR pixels as well as its own patch (the patch embedding alone does not)
        self.lr_context = lr_context_conv(latent_channels, settings.lr_context) if settings.lr_context else None
        self.dit = DiTTransformer2DModel(
            num_attention_heads=heads,
            attention_head_dim=head_dim,
            in_channels=2 * latent_channels + settings.lr_context,
            out_channels=latent_channels,
            num_layers=depth,
            sample_size=sample_size,
            patch_size=settings.patch,
            num_embeds_ada_norm=1,
        )
        # the class label is a constant 0: diffusers' label dropout (10 %, drawn per batch from the global
        # generator) would only add noise, and would make a sample's result depend on its batch
        for module in self.dit.modules():
            if hasattr(module, "dropout_prob") and hasattr(module, "token_drop"):
                module.dropout_prob = 0.0
        if settings.init == "zero":
            zero_modulation_and_output(self.dit)
        self.aug_level = AugLevelEmbedding(heads * head_dim)
        attach([block.norm1.emb for block in self.dit.transformer_blocks], self.aug_level, _dit_levels)
        if settings.checkpointing:
            self.dit.enable_gradient_checkpointing()

    def describe(self) -> dict:
        total = sum(p.numel() for p in self.parameters())
        s = self.settings
        return {
            "kind": "dit",
            "source": f"from scratch, {s.depth} blocks x {s.heads} heads x {s.head_dim}, patch {s.patch}",
            "parameters": total,
            "trained": total,
        }

    def save_final(self, folder) -> None:
        """The trained transformer in diffusers' format (``DiTTransformer2DModel.from_pretrained``) and, with
        ``lr_context``, its convolution in ``LR_CONTEXT_FILE`` beside it; at augmentation level 0 (validation)
        they are the whole generator."""
        from safetensors.torch import save_file

        self.dit.save_pretrained(folder, safe_serialization=True)
        if self.lr_context is not None:
            tensors = {k: v.detach().cpu().contiguous() for k, v in self.lr_context.state_dict().items()}
            save_file(tensors, str(Path(folder) / LR_CONTEXT_FILE))

    def forward(
        self,
        noisy: torch.Tensor,
        lr_latent: torch.Tensor,
        timesteps: torch.Tensor,
        aug_level: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if aug_level is None:
            aug_level = noisy.new_zeros(noisy.shape[0])
        x = torch.cat([noisy, lr_latent], dim=1)
        if self.lr_context is not None:
            x = torch.cat([x, self.lr_context(lr_latent)], dim=1)
        return self.dit(x, timestep=timesteps, class_labels=aug_level.float()).sample
