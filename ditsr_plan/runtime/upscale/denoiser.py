"""The generator of an exported pipeline: a plain diffusers transformer driven as the trained generator is
at validation (augmentation level 0, whose embedding is exactly 0).

``describe(model)`` says how a trained generator calls its transformer (what ``sr_pipeline.json`` records
as ``"transformer"``) and gives the modules and tensors to save beside it; :class:`ExportedDenoiser`
calls the saved transformer the same way: ``cat([noisy, LR latent])`` when the conditioning is ``concat``,
PixArt's caption embedding and resolution conditions, a DiT's class label (the null class of a
class-conditional base, 0 for the demo's DiT), the LR adapter's features added before every block, and
the prediction's first ``channels`` channels (a base that predicts the variance too).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..train.generators.conditioning import LRAdapter, attach_adapter
from ..train.generators.dit import lr_context_conv


def prefixed(name: str, module: nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s tensors as ``sr_conditioning.safetensors`` holds them: ``name.KEY``, float, on the CPU."""
    return {f"{name}.{k}": v.detach().float().cpu().contiguous() for k, v in module.state_dict().items()}


def unprefixed(name: str, extra: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict of the module saved as ``name.*`` among ``extra``."""
    return {k.removeprefix(f"{name}."): v for k, v in extra.items() if k.startswith(f"{name}.")}


def describe(model: Any) -> tuple[dict, Any, dict[str, torch.Tensor]]:
    """(the transformer's calling convention, the diffusers transformer to save, the extra tensors: the
    caption as ``caption``, the adapter's as ``adapter.*``) of a trained generator (a from-scratch DiT or
    a pretrained transformer; LoRA merged)."""
    from ..train.generators.dit import SRDiT

    if isinstance(model, SRDiT):
        spec = {"kind": "dit", "concat": True, "channels": model.dit.config.out_channels, "class_label": 0}
        if model.lr_context is None:
            return spec, model.dit, {}
        spec["lr_context"] = int(model.lr_context.out_channels)
        return spec, model.dit, prefixed("lr_context", model.lr_context)
    merged = model.merged()
    spec = {"kind": model.kind, "concat": bool(model.concat), "channels": int(model.channels)}
    extra: dict[str, torch.Tensor] = {}
    if model.kind == "pixart":
        extra["caption"] = model.caption.detach().float().cpu().contiguous()
        spec["resolution"] = [float(v) for v in model.added["resolution"][0]] if model.added else None
    else:
        emb = merged.transformer_blocks[0].norm1.emb.class_embedder
        spec["class_label"] = int(emb.num_classes if getattr(emb, "dropout_prob", 0) > 0 else 0)
    if model.adapter is not None:
        settings = model.settings
        spec["adapter"] = {
            "width": settings.adapter_width,
            "patch": int(merged.config.patch_size),
            "blocks": len(merged.transformer_blocks),
            "inner": int(merged.config.num_attention_heads * merged.config.attention_head_dim),
        }
        extra.update(prefixed("adapter", model.adapter))
    return spec, merged, extra


class ExportedDenoiser(nn.Module):
    """``forward(noisy, lr_latent, timesteps, aug_level=None)`` -> the velocity, from a saved transformer."""

    def __init__(self, spec: dict, transformer: Any, extra: dict[str, torch.Tensor]):
        super().__init__()
        self.spec, self.transformer = spec, transformer
        self.kind, self.concat, self.channels = spec["kind"], spec["concat"], spec["channels"]
        self.patch_size = int(transformer.config.patch_size)
        self.adapter: LRAdapter | None = None
        self.adapter_features = None
        if spec.get("adapter"):
            a = spec["adapter"]
            self.adapter = LRAdapter(self.channels, a["width"], a["patch"], a["blocks"], a["inner"])
            self.adapter.load_state_dict(unprefixed("adapter", extra))
            attach_adapter(transformer.transformer_blocks, self)
        if self.kind == "pixart":
            self.register_buffer("caption", extra["caption"].float(), persistent=False)
        self.lr_context: nn.Conv2d | None = None
        if spec.get("lr_context"):  # a DiT of lr_context=N: the convolution whose channels join its input
            self.lr_context = lr_context_conv(self.channels, int(spec["lr_context"]))
            self.lr_context.load_state_dict(unprefixed("lr_context", extra))

    def caption_tensor(self) -> torch.Tensor:
        caption = self.get_buffer("caption")
        return caption

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        """What ``describe`` gives beside the transformer: the caption, the adapter's and lr_context's tensors."""
        extra: dict[str, torch.Tensor] = {"caption": self.caption_tensor().cpu()} if self.kind == "pixart" else {}
        if self.adapter is not None:
            extra.update(prefixed("adapter", self.adapter))
        if self.lr_context is not None:
            extra.update(prefixed("lr_context", self.lr_context))
        return extra

    def forward(self, noisy, lr_latent, timesteps, aug_level=None, use_adapter=True):
        """``use_adapter=False``: without the adapter's features (guidance's unconditional branch of
        ``eval guidance_drops=adapter``; the concatenated LR latent stays)."""
        n = noisy.shape[0]
        x = torch.cat([noisy, lr_latent], dim=1) if self.concat else noisy
        if self.lr_context is not None:
            x = torch.cat([x, self.lr_context(lr_latent)], dim=1)
        self.adapter_features = self.adapter(lr_latent) if self.adapter is not None and use_adapter else None
        if self.kind == "pixart":
            added: dict = {"resolution": None, "aspect_ratio": None}
            if self.spec.get("resolution"):
                added = {
                    "resolution": noisy.new_tensor([self.spec["resolution"]], dtype=torch.float32).expand(n, -1),
                    "aspect_ratio": noisy.new_ones(n, 1, dtype=torch.float32),
                }
            caption = self.caption.to(noisy.dtype).expand(n, -1, -1)
            out = self.transformer(x, encoder_hidden_states=caption, timestep=timesteps, added_cond_kwargs=added).sample
        else:
            labels = torch.full((n,), int(self.spec["class_label"]), dtype=torch.long, device=noisy.device)
            out = self.transformer(x, timestep=timesteps, class_labels=labels).sample
        return out[:, : self.channels]
