"""The original PixArt-alpha checkpoint (``PixArt-XL-2-512x512.pth``, the reference scripts' base) as a diffusers
PixArtTransformer2DModel, and its learned null caption.

The file is read with ``torch.load(weights_only=True)``: tensors and plain containers only, never code. Its
names are PixArt's own; they are converted to diffusers' layout from the facts of diffusers' conversion
script (our own code):

- ``x_embedder.proj`` -> ``pos_embed.proj``; ``t_embedder.mlp.0/2`` -> ``adaln_single.emb.timestep_embedder.
  linear_1/2``; ``csize_embedder``/``ar_embedder`` -> ``...resolution_embedder``/``aspect_ratio_embedder``
  (the 1024 px models); ``t_block.1`` -> ``adaln_single.linear``; ``y_embedder.y_proj.fc1/fc2`` ->
  ``caption_projection.linear_1/2``; ``final_layer.linear`` -> ``proj_out``, ``final_layer.scale_shift_table``
  -> ``scale_shift_table``;
- per block ``blocks.i.``: ``attn.qkv`` split in three (q, k, v along the output rows) -> ``attn1.to_q/k/v``,
  ``attn.proj`` -> ``attn1.to_out.0``, ``cross_attn.q_linear`` -> ``attn2.to_q``, ``cross_attn.kv_linear``
  split in two -> ``attn2.to_k/v``, ``cross_attn.proj`` -> ``attn2.to_out.0``, ``mlp.fc1/fc2`` ->
  ``ff.net.0.proj``/``ff.net.2``, ``scale_shift_table`` as is;
- ``pos_embed`` (the fixed sin-cos table: diffusers computes its own) is dropped; ``y_embedder.y_embedding``
  (the learned null caption, 120 x 4096) is not a weight of diffusers' model: it is returned apart.

The architecture comes from the tensors' shapes (blocks, width, channels, patch, caption width, sample
size), the number of heads from a ``config.json`` beside the file when there is one, else width / 72
(PixArt's head width).
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..loading import LoadError, check_bounds

Y_EMBEDDING = "y_embedder.y_embedding"

RENAMED = {
    "x_embedder.proj.": "pos_embed.proj.",
    "t_embedder.mlp.0.": "adaln_single.emb.timestep_embedder.linear_1.",
    "t_embedder.mlp.2.": "adaln_single.emb.timestep_embedder.linear_2.",
    "csize_embedder.mlp.0.": "adaln_single.emb.resolution_embedder.linear_1.",
    "csize_embedder.mlp.2.": "adaln_single.emb.resolution_embedder.linear_2.",
    "ar_embedder.mlp.0.": "adaln_single.emb.aspect_ratio_embedder.linear_1.",
    "ar_embedder.mlp.2.": "adaln_single.emb.aspect_ratio_embedder.linear_2.",
    "t_block.1.": "adaln_single.linear.",
    "y_embedder.y_proj.fc1.": "caption_projection.linear_1.",
    "y_embedder.y_proj.fc2.": "caption_projection.linear_2.",
    "final_layer.linear.": "proj_out.",
    "final_layer.scale_shift_table": "scale_shift_table",
}
IN_BLOCK = {  # within blocks.i. -> transformer_blocks.i.
    "attn.proj.": "attn1.to_out.0.",
    "cross_attn.q_linear.": "attn2.to_q.",
    "cross_attn.proj.": "attn2.to_out.0.",
    "mlp.fc1.": "ff.net.0.proj.",
    "mlp.fc2.": "ff.net.2.",
    "scale_shift_table": "scale_shift_table",
}
SPLIT = {
    "attn.qkv.": ("attn1.to_q.", "attn1.to_k.", "attn1.to_v."),
    "cross_attn.kv_linear.": ("attn2.to_k.", "attn2.to_v."),
}
DROPPED = ("pos_embed",)


def read_checkpoint(path: Path, what: str) -> dict[str, torch.Tensor]:
    """The tensors of an original checkpoint (``{"state_dict": ...}`` or the state dict itself; a
    ``module.`` prefix of DDP removed), read with ``weights_only=True``."""
    if not path.is_file():
        raise LoadError(f"{what}={path}: no such file (an original PixArt .pth checkpoint, or a diffusers folder)")
    try:
        data = _load(path)
    except pickle.UnpicklingError as exc:
        # torch's message suggests weights_only=False or allow-listing, which would run the file's code: only
        # the name of what it refused is passed on
        named = re.search(r"GLOBAL (\S+)", str(exc))
        if named is None and "Unsupported global" not in str(exc):
            raise LoadError(f"{what}={path}: not a readable PyTorch checkpoint (not a pickle of tensors)") from None
        raise LoadError(
            f"{what}={path}: refused: the file holds Python objects other than tensors "
            f"({named.group(1) if named else 'an object'}: code would run to load it); an original PixArt "
            "checkpoint holds tensors only -- is it the file you meant?"
        ) from None
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LoadError(f"{what}={path}: not a readable PyTorch checkpoint ({first})") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise LoadError(f"{what}={path}: not a state dict of tensors (nor {{'state_dict': ...}})")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in data.items()}


def _load(path: Path) -> Any:
    """``torch.load`` with weights only, memory-mapped when the file is of the zip format (else read)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def convert(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """PixArt's names -> diffusers' (see the module's docstring); and the null caption (None if absent).
    A name it does not know raises a KeyError naming it."""
    out: dict[str, torch.Tensor] = {}
    for name, value in tensors.items():
        if name == Y_EMBEDDING or name in DROPPED:
            continue
        if name.startswith("blocks."):
            _, index, rest = name.split(".", 2)
            out.update(_block(f"transformer_blocks.{index}.", rest, value, name))
            continue
        renamed = next((p for p in RENAMED if name.startswith(p)), None)
        if renamed is None:
            raise KeyError(name)
        out[RENAMED[renamed] + name[len(renamed) :]] = value
    return out, tensors.get(Y_EMBEDDING)


def _block(target: str, rest: str, value: torch.Tensor, name: str) -> dict[str, torch.Tensor]:
    for prefix, parts in SPLIT.items():
        if rest.startswith(prefix):
            leaf = rest[len(prefix) :]
            return {target + p + leaf: chunk for p, chunk in zip(parts, value.chunk(len(parts), dim=0), strict=True)}
    renamed = next((p for p in IN_BLOCK if rest.startswith(p)), None)
    if renamed is None:
        raise KeyError(name)
    return {target + IN_BLOCK[renamed] + rest[len(renamed) :]: value}


def config_of(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, Any]:
    """diffusers' PixArtTransformer2DModel config of an original checkpoint, from its tensors' shapes."""
    proj = tensors["pos_embed.proj.weight"]
    width, in_channels, patch = proj.shape[0], proj.shape[1], proj.shape[2]
    blocks = 1 + max(int(k.split(".")[1]) for k in tensors if k.startswith("transformer_blocks."))
    out = tensors["proj_out.weight"].shape[0] // (patch * patch)
    config: dict[str, Any] = {
        "num_layers": blocks,
        "in_channels": in_channels,
        "out_channels": out,
        "patch_size": patch,
        "attention_head_dim": 72,
        "num_attention_heads": width // 72,
        "cross_attention_dim": width,
        "caption_channels": tensors["caption_projection.linear_1.weight"].shape[1],
        "attention_bias": True,
        "activation_fn": "gelu-approximate",
        "num_embeds_ada_norm": 1000,
        "norm_type": "ada_norm_single",
        "norm_elementwise_affine": False,
        "norm_eps": 1e-6,
        "sample_size": 64,
    }
    beside = path.with_name("config.json")
    if beside.is_file() and beside.stat().st_size < 1 << 16:
        known = json.loads(beside.read_text(encoding="utf-8"))
        heads = known.get("num_attention_heads") if isinstance(known, dict) else None
        if isinstance(heads, int) and heads > 0 and width % heads == 0:
            config.update(num_attention_heads=heads, attention_head_dim=width // heads)
        size = known.get("sample_size") if isinstance(known, dict) else None
        if isinstance(size, int) and size > 0:
            config["sample_size"] = size
    return config


def fix_heads_and_size(config: dict[str, Any], width: int, table: torch.Tensor | None) -> None:
    """The sample size from the checkpoint's fixed position table (tokens = (size / patch)^2), when it has one."""
    if table is not None and table.ndim == 3:
        side = math.isqrt(table.shape[1])
        if side * side == table.shape[1]:
            config["sample_size"] = side * config["patch_size"]
    if config["num_attention_heads"] == 0 or width % config["num_attention_heads"]:
        raise ValueError(f"a width of {width} is not a whole number of heads of 72: put a config.json beside the file")


def load_original(path: Path, what: str):
    """(the transformer, its null caption or None, its fingerprint) from an original PixArt checkpoint."""
    from diffusers import PixArtTransformer2DModel

    raw = read_checkpoint(path, what)
    try:
        tensors, caption = convert(raw)
        config = config_of(tensors, path)
        fix_heads_and_size(config, tensors["pos_embed.proj.weight"].shape[0], raw.get("pos_embed"))
    except KeyError as exc:
        raise LoadError(f"{what}={path}: not an original PixArt-alpha checkpoint (unknown or missing {exc})") from None
    except (ValueError, IndexError, RecursionError, ZeroDivisionError) as exc:
        raise LoadError(f"{what}={path}: {exc}") from None
    # the shapes read from a small file may describe a model of any size: bounded before it is built
    check_bounds(config, what, str(path))
    if not all(isinstance(config.get(k), int) and config[k] >= 1 for k in ("patch_size", "sample_size")):
        raise LoadError(
            f"{what}={path}: a patch or sample size below 1 ({config.get('patch_size')}, "
            f"{config.get('sample_size')}): not a PixArt-alpha checkpoint"
        )
    model: Any = PixArtTransformer2DModel(**config)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise LoadError(f"{what}={path}: its tensors do not fit PixArt-alpha's layout ({first})") from None
    return model, caption, fingerprint(path, config)


def fingerprint(path: Path, config: dict[str, Any]) -> dict:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    weights = {path.name: h.hexdigest()}
    digest = hashlib.sha256(json.dumps([config, weights], sort_keys=True).encode()).hexdigest()[:16]
    return {"digest": digest, "class": "PixArtTransformer2DModel", "weights": weights}


def caption_file(path: Path, what: str) -> torch.Tensor:
    """The caption embedding a ``.pth`` names: an original checkpoint's ``y_embedding``, or its one tensor."""
    tensors = read_checkpoint(path, what)
    if Y_EMBEDDING in tensors:
        return tensors[Y_EMBEDDING]
    if len(tensors) == 1:
        return next(iter(tensors.values()))
    raise LoadError(f"{what}={path}: neither {Y_EMBEDDING} nor a single tensor in it ({len(tensors)} tensors)")
