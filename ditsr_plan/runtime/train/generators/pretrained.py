"""A pretrained diffusers transformer -- PixArt-alpha (``model pixart path=...``) or DiT (``model dit
path=...``) -- made a super-resolution generator: LR conditioning, LoRA, the null caption, the
augmentation level, and which of its weights train.

- LR conditioning (``cond``): ``concat`` widens the patch embedding to take the LR latent as extra input
  channels, the new weights at zero; ``adapter`` adds the features of a small convolutional encoder of the
  LR latent to every block's input through zero-initialised projections; ``concat+adapter`` both (the
  reference). At step 0 the model's output equals the base model's.
- PixArt's text conditioning: ``caption=null`` uses one token of zeros (fixed, not learned: the reference
  uses a fixed embedding of the empty prompt too, and a learned one would be one more trained tensor to
  carry into every export), ``caption=FILE.safetensors`` a precomputed embedding (its one tensor, L x C or
  1 x L x C). The resolution and aspect-ratio conditions of the 1024 px models come from the crop size.
- A checkpoint that predicts the variance too (out channels = 2 x the latent's) is used through its first
  half, the velocity.
- ``train``: ``lora`` (the adapters only), ``lora+cond`` (the adapters and the conditioning: the widened
  input layer, the LR adapter, the augmentation embedding), ``full`` (everything); ``auto``: ``lora+cond``
  with LoRA, else ``full``. Frozen weights are bf16 on CUDA; trained ones fp32.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from ditsr_plan.settings import schemas

from ..loading import LoadError, load_pretrained
from .aug_level import AugLevelEmbedding, attach
from .conditioning import LRAdapter, attach_adapter, widen_patch_embedding
from .lora import add_lora, merge_lora, save_lora

CLASSES = {
    "pixart": ("diffusers.models.transformers.pixart_transformer_2d", "PixArtTransformer2DModel"),
    "dit": ("diffusers.models.transformers.dit_transformer_2d", "DiTTransformer2DModel"),
}


def transformer_class(kind: str):
    import importlib

    module, name = CLASSES[kind]
    return getattr(importlib.import_module(module), name)


def base_fingerprint(folder: Path) -> dict:
    """What identifies a base model: its config and the SHA-256 of each weight file (checkpoints of a run
    hold only the trained tensors: resuming against another base must be refused)."""
    config = json.loads((folder / "config.json").read_text())
    weights = {}
    for path in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        weights[path.name] = h.hexdigest()
    digest = hashlib.sha256(json.dumps([config, weights], sort_keys=True).encode()).hexdigest()[:16]
    return {"digest": digest, "class": config.get("_class_name"), "weights": weights}


class SRTransformer(nn.Module):
    def __init__(
        self,
        kind: str,
        settings: schemas.DitModel | schemas.PixartModel,
        latent_channels: int,
        latent_size: int,
        crop: int,
        device,
    ):
        super().__init__()
        self.kind, self.settings = kind, settings
        cls = transformer_class(kind)
        what = f"model {kind} path"
        path = settings.path
        assert path is not None, "a DiT without path= is trained from scratch (dit.py)"
        self.base = load_pretrained(cls, path, settings.subfolder, what, "transformer", low_cpu_mem_usage=True)
        self.source, self.source_kind = self.base.loaded_from
        config = self.base.config
        c = latent_channels
        if config.in_channels != c:
            raise LoadError(
                f"model {kind} at {settings.path} takes {config.in_channels} latent channels, but the plan's latent "
                f"has {c}: use the latent its checkpoint was trained with (latent vae path=... for an SD-VAE model)"
            )
        if config.out_channels not in (c, 2 * c):
            raise LoadError(f"model {kind} predicts {config.out_channels} channels; a {c}-channel latent needs {c}")
        self.channels = c
        self.patch_size = config.patch_size
        inner = config.num_attention_heads * config.attention_head_dim
        cond = settings.cond
        self.concat = "concat" in cond
        if self.concat:
            self.base.pos_embed.proj = widen_patch_embedding(self.base.pos_embed.proj, c)
            self.base.register_to_config(in_channels=2 * c)
        self.adapter = None
        self.adapter_features = None
        if "adapter" in cond:
            blocks = len(self.base.transformer_blocks)
            self.adapter = LRAdapter(c, settings.adapter_width, config.patch_size, blocks, inner)
            attach_adapter(self.base.transformer_blocks, self)
        self.aug_level = AugLevelEmbedding(inner)
        self._attach_aug_level()
        self._conditions(crop)
        self.lora_config = None
        if settings.lora:
            alpha = settings.lora_alpha or settings.lora
            targets = [t.strip() for t in settings.lora_targets.split(",") if t.strip()]
            self.lora_config = add_lora(self.base, settings.lora, alpha, settings.lora_dropout, targets)
        self._choose_trained(device)
        if settings.checkpointing:
            self.base.enable_gradient_checkpointing()
        self.fingerprint = base_fingerprint(self.source)

    # ---- construction ---------------------------------------------------------------------------------

    def _attach_aug_level(self) -> None:
        if self.kind == "pixart":
            # AdaLayerNormSingle calls emb(timestep, **added_cond_kwargs, batch_size=..., hidden_dtype=...)
            def take(args, kwargs):
                kwargs = dict(kwargs)
                return kwargs.pop("aug_level"), args, kwargs

            attach([self.base.adaln_single.emb], self.aug_level, take)
        else:
            # every DiT block's norm1.emb(timestep, class_labels, hidden_dtype=...): the levels come as the
            # labels; the real label is the null class (the unconditional embedding) of a class-conditional DiT
            emb = self.base.transformer_blocks[0].norm1.emb.class_embedder
            null = emb.num_classes if getattr(emb, "dropout_prob", 0) > 0 else 0

            def take(args, kwargs):
                timestep, levels = args[0], args[1]
                labels = torch.full((levels.shape[0],), null, dtype=torch.long, device=levels.device)
                return levels, (timestep, labels), kwargs

            attach([block.norm1.emb for block in self.base.transformer_blocks], self.aug_level, take)

    def _conditions(self, crop: int) -> None:
        """PixArt's caption embedding (a buffer) and, for the 1024 px models, resolution and aspect ratio."""
        self.added = {}
        if not isinstance(self.settings, schemas.PixartModel):
            return
        config = self.base.config
        caption = self.settings.caption
        if caption == "null":
            embedding = torch.zeros(1, 1, config.caption_channels)
        else:
            from safetensors.torch import load_file

            if not Path(caption).is_file():
                raise LoadError(f"model pixart caption={caption}: no such file (a .safetensors file, or null)")
            try:
                tensors = load_file(caption)
            except Exception as exc:  # safetensors raises its own error type for a file that is not one
                raise LoadError(f"model pixart caption={caption}: not a safetensors file ({exc})") from None
            if len(tensors) != 1:
                raise LoadError(f"model pixart caption={caption}: expected one tensor, found {sorted(tensors)}")
            embedding = next(iter(tensors.values())).float()
            embedding = embedding[None] if embedding.ndim == 2 else embedding
            if embedding.shape[-1] != config.caption_channels:
                raise LoadError(
                    f"model pixart caption={caption}: {embedding.shape[-1]} channels, the model takes "
                    f"{config.caption_channels}"
                )
        self.register_buffer("caption", embedding, persistent=False)
        if self.base.use_additional_conditions:
            self.added = {
                "resolution": torch.tensor([[crop, crop]], dtype=torch.float32),
                "aspect_ratio": torch.ones(1, 1),
            }

    def _choose_trained(self, device) -> None:
        """Which weights train (``train``), frozen ones in bf16 on CUDA."""
        mode = self.settings.train
        if mode == "auto":
            mode = "lora+cond" if self.lora_config is not None else "full"
        if mode.startswith("lora") and self.lora_config is None:
            raise LoadError(f"model {self.kind} train={mode} needs lora=RANK (the LoRA rank, e.g. 16)")
        self.train_mode = mode
        for name, param in self.named_parameters():
            lora, cond = "lora_" in name, mode == "lora+cond" and self._is_conditioning(name)
            param.requires_grad_(mode == "full" or lora or cond)
        if torch.device(device).type == "cuda":
            for param in self.parameters():
                if not param.requires_grad:
                    param.data = param.data.to(torch.bfloat16)

    def _is_conditioning(self, name: str) -> bool:
        return name.startswith(("adapter.", "aug_level.")) or (self.concat and name.startswith("base.pos_embed.proj."))

    # ---- the protocol ---------------------------------------------------------------------------------

    def forward(self, noisy, lr_latent, timesteps, aug_level=None):
        n = noisy.shape[0]
        if aug_level is None:
            aug_level = noisy.new_zeros(n)
        x = torch.cat([noisy, lr_latent], dim=1) if self.concat else noisy
        self.adapter_features = self.adapter(lr_latent) if self.adapter is not None else None
        if self.kind == "pixart":
            added = {k: v.to(noisy.device).expand(n, -1) for k, v in self.added.items()}
            added = {"resolution": None, "aspect_ratio": None, **added, "aug_level": aug_level.float()}
            caption = self.caption.to(noisy.dtype).expand(n, -1, -1)
            out = self.base(x, encoder_hidden_states=caption, timestep=timesteps, added_cond_kwargs=added).sample
        else:
            out = self.base(x, timestep=timesteps, class_labels=aug_level.float()).sample
        return out[:, : self.channels]

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    COND_PREFIXES = ("adapter.", "aug_level.", "base.pos_embed.proj.")  # the LR conditioning's parameters

    def parameter_groups(self) -> list[dict]:
        """The base's trained parameters (LoRA, or all of them with train=full) at the lr knob, the
        conditioning's (LR input layer, adapter, augmentation embedding) at ``cond_lr`` x it."""
        base: list[nn.Parameter] = []
        cond: list[nn.Parameter] = []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (cond if name.startswith(self.COND_PREFIXES) else base).append(p)
        return [{"params": base, "lr_scale": 1.0}, {"params": cond, "lr_scale": float(self.settings.cond_lr)}]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names}

    def describe(self) -> dict:
        total = sum(p.numel() for p in self.parameters())
        trained = sum(p.numel() for p in self.parameters() if p.requires_grad)
        info = {
            "kind": self.kind,
            "source": f"{self.source} ({self.source_kind})",
            "parameters": total,
            "trained": trained,
            "train": self.train_mode,
            "cond": self.settings.cond,
        }
        if self.lora_config is not None:
            info["lora"] = f"rank {self.settings.lora} on {self.settings.lora_targets}"
        return info

    def save_final(self, folder: Path) -> None:
        """The trained generator: the LoRA in peft's format (or the whole transformer when it all trained),
        the conditioning's tensors, and what the base was (``generator.json``)."""
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        if self.lora_config is not None and self.train_mode != "full":
            save_lora(self.base, self.lora_config, folder)
        else:
            self.base.save_pretrained(folder / "transformer", safe_serialization=True)
        conditioning = {
            k: v.detach().contiguous().cpu() for k, v in self.trainable_state_dict().items() if "lora_" not in k
        }
        save_file(conditioning, str(folder / "sr_conditioning.safetensors"))
        meta = {
            "kind": self.kind,
            "settings": self.settings.model_dump(mode="json"),
            "base": self.fingerprint,
            "train": self.train_mode,
        }
        (folder / "generator.json").write_text(json.dumps(meta, indent=1, default=str))

    def merged(self) -> nn.Module:
        """The base transformer with the LoRA merged in and the concat conditioning in its input layer: a
        plain diffusers model (the adapter and the augmentation embedding are not part of it)."""
        if self.lora_config is not None:
            merge_lora(self.base)
            self.lora_config = None
        return self.base
