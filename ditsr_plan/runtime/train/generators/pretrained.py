"""A pretrained diffusers transformer -- PixArt-alpha (``model pixart path=...``) or DiT (``model dit
path=...``) -- made a super-resolution generator: LR conditioning, LoRA, the null caption, the
augmentation level, and which of its weights train.

- LR conditioning (``cond``): ``concat`` widens the patch embedding to take the LR latent as extra input
  channels, the new weights at zero; ``adapter`` adds the features of a small convolutional encoder of the
  LR latent to every block's input through zero-initialised projections (``adapter=pyramid``: the
  reference scripts' feature pyramid and hybrid injection, ``pyramid.py`` and ``injection.py``);
  ``concat+adapter`` both (the reference). At step 0 the model's output equals the base model's.
- ``path=FILE.pth``: the original PixArt-alpha checkpoint (``pixart_pth.py``).
- PixArt's text conditioning: ``caption=null`` is that checkpoint's learned null caption (``y_embedding``),
  or with a diffusers folder one token of zeros (fixed, not learned); ``caption=FILE.safetensors`` a
  precomputed embedding (its one tensor, L x C or 1 x L x C), ``caption=FILE.pth`` an original checkpoint's
  ``y_embedding``. The resolution and aspect-ratio conditions of the 1024 px models come from the crop size.
- A checkpoint that predicts the variance too (out channels = 2 x the latent's) is used through its first
  half, the velocity.
- ``train``: ``lora`` (the adapters only), ``lora+cond`` (the adapters and the conditioning: the widened
  input layer, the LR adapter, the augmentation embedding), ``lora+rest`` (every parameter but the base
  weights LoRA wraps: the reference scripts' set), ``full`` (everything); ``auto``: ``lora+cond`` with LoRA,
  else ``full``; ``train_add``/``train_remove`` patterns then add or remove parameters, and ``cond_lr_on``
  picks those at ``cond_lr`` x lr (``train_sets.py``). Frozen weights are bf16 on CUDA; trained ones fp32.
- ``weights=False`` builds the generator from the folder's ``config.json`` alone on the meta device (no
  weight read or allocated): what ``show --params`` counts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ditsr_plan.settings import schemas

from ..loading import LoadError, config_only, load_pretrained, model_folder
from .aug_level import AugLevelEmbedding, attach
from .conditioning import LRAdapter, attach_adapter, widen_patch_embedding
from .injection import Injection, InjectionState
from .lora import add_lora, merge_lora, save_lora
from .pixart_pth import caption_file, load_original
from .pyramid_model import build_pyramid, has_linear
from .train_sets import at_cond_lr, choose

CLASSES = {
    "pixart": ("diffusers.models.transformers.pixart_transformer_2d", "PixArtTransformer2DModel"),
    "dit": ("diffusers.models.transformers.dit_transformer_2d", "DiTTransformer2DModel"),
}


def transformer_class(kind: str):
    from ..diffusers_import import model_class

    return model_class(*CLASSES[kind])


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
        origins: Mapping[str, object] | None = None,
        weights: bool = True,
    ):
        super().__init__()
        self.kind, self.settings, self.origins, self.weights = kind, settings, origins, weights
        cls = transformer_class(kind)
        what = f"model {kind} path"
        path = settings.path
        assert path is not None, "a DiT without path= is trained from scratch (dit.py)"
        self.null_caption: torch.Tensor | None = None  # the original checkpoint's learned one
        self.fingerprint: dict | None = None
        if kind == "pixart" and Path(path).suffix == ".pth":
            if settings.subfolder:
                raise LoadError(f"{what}={path}: a .pth checkpoint is one file: drop subfolder=")
            self.source, self.source_kind = Path(path).expanduser(), "an original PixArt-alpha checkpoint"
            # weights=False too: the file is its own config (shapes), read memory-mapped
            self.base, self.null_caption, self.fingerprint = load_original(self.source, what)
        elif weights:
            self.base = load_pretrained(cls, path, settings.subfolder, what, "transformer", low_cpu_mem_usage=True)
            self.source, self.source_kind = self.base.loaded_from
        else:
            self.base = config_only(cls, path, settings.subfolder, what, "transformer")
            self.source, self.source_kind = model_folder(path, settings.subfolder, what, "transformer")
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
        self.adapter: nn.Module | None = None
        self.adapter_features = None
        self.injection: Injection | None = None
        with torch.device("cpu" if weights else "meta"):
            self._build_sr_parts(c, inner, crop)
        self._choose_trained(device)
        if settings.checkpointing:
            self.base.enable_gradient_checkpointing()
        if self.fingerprint is None and weights:
            self.fingerprint = base_fingerprint(self.source)

    def _build_sr_parts(self, c: int, inner: int, crop: int) -> None:
        """The adapter (small, or the scripts' pyramid and its injection), the augmentation embedding, the
        caption and LoRA (on the meta device for weights=False)."""
        settings = self.settings
        cond = settings.cond
        pyramid = isinstance(settings, schemas.PixartModel) and settings.adapter == "pyramid"
        if "adapter" in cond and not pyramid:
            blocks = len(self.base.transformer_blocks)
            self.adapter = LRAdapter(c, settings.adapter_width, self.patch_size, blocks, inner)
            attach_adapter(self.base.transformer_blocks, self)
        self.aug_level = AugLevelEmbedding(inner)
        self._attach_aug_level()
        if "adapter" in cond and pyramid:
            assert isinstance(settings, schemas.PixartModel)
            self.adapter, self.injection = build_pyramid(self.base, settings, c, inner)
        self._conditions(crop)
        self.lora_config = None
        if settings.lora:
            alpha = settings.lora_alpha or settings.lora
            targets = [t.strip() for t in settings.lora_targets.split(",") if t.strip()]
            ours = [t for t in targets if self.injection is not None and has_linear(self.injection, t)]
            base_targets = [t for t in targets if t not in ours]
            if not base_targets:
                raise LoadError("model lora_targets: name at least one linear layer of the transformer (e.g. to_q)")
            self.lora_config = add_lora(self.base, settings.lora, alpha, settings.lora_dropout, base_targets)
            if ours:  # the injection's residual projections (res_proj), as the scripts wrapped them
                assert self.injection is not None
                add_lora(self.injection, settings.lora, alpha, settings.lora_dropout, ours)

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
        if caption == "null" and self.null_caption is not None:
            embedding = self.null_caption.float()[None]
        elif caption == "null" or not self.weights:
            embedding = torch.zeros(1, 1, config.caption_channels)
        elif Path(caption).suffix == ".pth":
            embedding = caption_file(Path(caption), "model pixart caption").float()
            embedding = embedding[None] if embedding.ndim == 2 else embedding
        else:
            from safetensors.torch import load_file

            if not Path(caption).is_file():
                raise LoadError(f"model pixart caption={caption}: no such file (a .safetensors or .pth file, or null)")
            try:
                tensors = load_file(caption)
            except Exception as exc:  # safetensors raises its own error type for a file that is not one
                raise LoadError(f"model pixart caption={caption}: not a safetensors file ({exc})") from None
            if len(tensors) != 1:
                raise LoadError(f"model pixart caption={caption}: expected one tensor, found {sorted(tensors)}")
            embedding = next(iter(tensors.values())).float()
            embedding = embedding[None] if embedding.ndim == 2 else embedding
        if embedding.ndim != 3 or embedding.shape[-1] != config.caption_channels:
            raise LoadError(
                f"model pixart caption={caption}: a {tuple(embedding.shape)} tensor, the model takes L x "
                f"{config.caption_channels} (its caption channels)"
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
        s = self.settings
        names = [n for n, _ in self.named_parameters()]
        chosen = choose(names, mode, self.concat, s.train_add, s.train_remove, self.origins)
        self.cond_lr_names = at_cond_lr(names, s.cond_lr_on, chosen, self.origins)
        for name, param in self.named_parameters():
            param.requires_grad_(name in chosen)
        if torch.device(device).type == "cuda" and self.weights:
            for param in self.parameters():
                if not param.requires_grad:
                    param.data = param.data.to(torch.bfloat16)

    # ---- the protocol ---------------------------------------------------------------------------------

    def forward(self, noisy, lr_latent, timesteps, aug_level=None, style_keep=None, use_adapter=True):
        """The velocity; ``style_keep`` (N values, 0 or 1): which samples keep the pyramid adapter's style
        vector (``diffusion dropout_drops=style``); ``use_adapter=False``: without the adapter's features and
        style (the unconditional branch of ``eval guidance_drops=adapter``)."""
        n = noisy.shape[0]
        if aug_level is None:
            aug_level = noisy.new_zeros(n)
        x = torch.cat([noisy, lr_latent], dim=1) if self.concat else noisy
        self._adapter_state(lr_latent, style_keep, use_adapter)
        if self.kind == "pixart":
            added = {k: v.to(noisy.device).expand(n, -1) for k, v in self.added.items()}
            added = {"resolution": None, "aspect_ratio": None, **added, "aug_level": aug_level.float()}
            caption = self.caption.to(noisy.dtype).expand(n, -1, -1)
            out = self.base(x, encoder_hidden_states=caption, timestep=timesteps, added_cond_kwargs=added).sample
        else:
            out = self.base(x, timestep=timesteps, class_labels=aug_level.float()).sample
        return out[:, : self.channels]

    def _adapter_state(self, lr_latent, style_keep, use_adapter: bool) -> None:
        """What the adapter's hooks read in this call (nothing without the adapter)."""
        self.adapter_features = None
        if self.injection is not None:
            self.injection.state = None
        if self.adapter is None or not use_adapter:
            return
        if self.injection is None:
            self.adapter_features = self.adapter(lr_latent)
            return
        features, style = self.adapter(lr_latent)
        if style_keep is not None:
            style = style * style_keep.reshape(-1, 1).to(style.dtype)
        self.injection.state = InjectionState(features, style)

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_groups(self) -> list[dict]:
        """The trained parameters at the lr knob, those of ``cond_lr_on`` (by default the conditioning: LR
        input layer, adapter, augmentation embedding) at ``cond_lr`` x it."""
        base: list[nn.Parameter] = []
        cond: list[nn.Parameter] = []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (cond if name in self.cond_lr_names else base).append(p)
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
        if self.injection is not None:
            info["cond"] = f"{self.settings.cond} (pyramid adapter into {len(self.injection.layers)} blocks)"
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
        conditioning = {  # everything trained but the base's LoRA (in peft's files)
            k: v.detach().contiguous().cpu()
            for k, v in self.trainable_state_dict().items()
            if not (k.startswith("base.") and "lora_" in k)
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
