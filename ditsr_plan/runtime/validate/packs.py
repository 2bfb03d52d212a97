"""Validation packs: a fixed set of GT crops with their LR, made once, validated on at every eval.

The reference validates on 50 DF2K crops (GT 512 / LR 128, made once with the training degradation) and
picks checkpoints on the pack's mean PSNR / LPIPS. A pack is a folder with one ``gt*`` and one ``lq*``
folder holding images of the same file names (``gt/`` + ``lq/`` as ``pack make`` writes them, or
``gt512/`` + ``lq128/`` as the reference's pack is laid out); the LR is bicubic-upsampled to the GT size on
loading (the model's input and the bicubic baseline).

``make_pack`` is deterministic: the same sources and arguments write byte-identical files (PNG, and a
``manifest.json`` with the source files, crop boxes, seed, degradation and SHA-256 of every file).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import RunFailure
from ..seeds import generator
from ..train.data import IMAGE_SUFFIXES, find_images, fit_crop, load_image
from ..train.degradation import apply, draw, upsample
from .images import save_png
from .metrics import all_metrics, mean_metrics

PACK_FORMAT = 1
SHOWN = 5  # names listed in an error


class PackError(RunFailure):
    """A pack that cannot be made or used: what is wrong, and with which files."""


@dataclass
class PackImage:
    name: str
    gt: torch.Tensor  # 1 x 3 x H x W in [-1, 1]
    lr_up: torch.Tensor  # the LR, bicubic-upsampled to the GT's size


def _png(image: torch.Tensor, path: Path) -> str:
    """3 x H x W in [-1, 1] -> an 8-bit PNG; its SHA-256."""
    save_png(image, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _safe(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-")[:40] or "image"


def make_pack(
    hr_dir: Path,
    out: Path,
    degradation: dict,
    n: int = 50,
    size: int = 512,
    scale: int = 4,
    seed: int = 3407,
    progress: Callable[[str], None] = lambda line: None,
) -> dict:
    """Pick ``n`` images of ``hr_dir`` (recursively) by ``seed``, crop ``size`` px from each at a position
    drawn from the seed, degrade each crop with ``degradation`` (the plan's degrade block, on the CPU) to
    ``size / scale`` and write ``out/gt/``, ``out/lq/`` and ``out/manifest.json``; return the manifest."""
    if size % scale:
        raise PackError(f"pack make: --size {size} is not a multiple of --scale {scale}")
    if not hr_dir.is_dir():
        raise PackError(f"pack make: {hr_dir}: no such folder")
    if out.exists() and any(out.iterdir()):
        raise PackError(f"pack make: {out} exists and is not empty; give a new folder (nothing was overwritten)")
    files = find_images(hr_dir, cache=False)
    if not files:
        raise PackError(f"pack make: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {hr_dir}")
    order = torch.randperm(len(files), generator=generator(seed, "pack-pick")).tolist()
    chosen = [files[i] for i in order[: min(n, len(files))]]
    (out / "gt").mkdir(parents=True, exist_ok=True)
    (out / "lq").mkdir(exist_ok=True)
    entries = []
    for i, path in enumerate(chosen):
        try:
            image = load_image(path)
        except Exception as exc:
            raise PackError(f"pack make: cannot read {path}: {exc}") from None
        upscaled = min(image.shape[-2:]) < size
        image = fit_crop(image, size)
        g = generator(seed, "pack", i)
        h, w = image.shape[-2:]
        y, x = (
            int(torch.randint(0, h - size + 1, (), generator=g)),
            int(torch.randint(0, w - size + 1, (), generator=g)),
        )
        gt = image[:, y : y + size, x : x + size]
        lr = apply(draw(degradation, g, (size, size), scale), gt[None], "pil")[0]
        name = f"{i:04d}_{_safe(path.stem)}.png"
        entries.append(
            {
                "name": name,
                "source": path.relative_to(hr_dir).as_posix(),
                "box": [y, x, size, size],
                "upscaled": upscaled,
                "gt_sha256": _png(gt, out / "gt" / name),
                "lq_sha256": _png(lr, out / "lq" / name),
            }
        )
        progress(f"pack: {i + 1}/{len(chosen)} {name}")
    manifest = {
        "format": PACK_FORMAT,
        "source": str(hr_dir),
        "n": len(chosen),
        "size": size,
        "scale": scale,
        "seed": seed,
        "degradation": degradation,
        "images": entries,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True, default=list) + "\n")
    return manifest


def _one(folder: Path, prefix: str) -> Path:
    found = sorted(d for d in folder.iterdir() if d.is_dir() and d.name.lower().startswith(prefix))
    if not found:
        raise PackError(
            f"pack {folder}: no {prefix}* folder (a pack holds {prefix}/ beside "
            f"{'lq' if prefix == 'gt' else 'gt'}/, e.g. gt512/ and lq128/)"
        )
    if len(found) > 1:
        raise PackError(f"pack {folder}: several {prefix}* folders ({', '.join(d.name for d in found)}); keep one")
    return found[0]


def _listed(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def load_pack(folder: Path, scale: int, multiple: int = 1, limit: int | None = None) -> list[PackImage]:
    """The pack's images (sorted by name; the first ``limit``): GT and the LR upsampled to it. ``scale``:
    the run's factor (GT = scale x LR); ``multiple``: what the GT sides must be a multiple of."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise PackError(f"pack {folder}: no such folder")
    gt_dir, lq_dir = _one(folder, "gt"), _one(folder, "lq")
    gts = {p.name: p for p in gt_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    lqs = {p.name: p for p in lq_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    if not gts:
        raise PackError(f"pack {folder}: {gt_dir.name}/ holds no images")
    only_gt, only_lq = sorted(set(gts) - set(lqs)), sorted(set(lqs) - set(gts))
    if only_gt or only_lq:
        parts = [
            f"only in {gt_dir.name}/: {_listed(only_gt)}" if only_gt else "",
            f"only in {lq_dir.name}/: {_listed(only_lq)}" if only_lq else "",
        ]
        raise PackError(
            f"pack {folder}: the file names of {gt_dir.name}/ and {lq_dir.name}/ differ ("
            + "; ".join(p for p in parts if p)
            + ")"
        )
    images = []
    for name in sorted(gts)[:limit]:
        pair = []
        for path in (gts[name], lqs[name]):
            try:
                pair.append(load_image(path))
            except Exception as exc:
                raise PackError(f"pack {folder}: cannot read {path.relative_to(folder)}: {exc}") from None
        gt, lq = pair
        (h, w), (lh, lw) = gt.shape[-2:], lq.shape[-2:]
        if (lh * scale, lw * scale) != (h, w):
            raise PackError(
                f"pack {folder}: {lq_dir.name}/{name} is {lw} x {lh}, but {gt_dir.name}/{name} is {w} x {h}: "
                f"the run trains x{scale}, so the LR must be {w // scale} x {h // scale}"
            )
        if h % multiple or w % multiple:
            raise PackError(
                f"pack {folder}: {gt_dir.name}/{name} is {w} x {h}; the model needs sides that are multiples of "
                f"{multiple} (crop the pack, e.g. pack make --size 512)"
            )
        images.append(PackImage(name, gt[None].contiguous(), upsample(lq[None], (h, w))))
    return images


def pack_baseline(images: list[PackImage], scale: int, lpips_fn=None) -> dict:
    """The bicubic baseline of a pack: ``{"mean": ..., name: ...}``."""
    rows = {im.name: all_metrics(im.lr_up, im.gt, scale, lpips_fn)[0] for im in images}
    return {"mean": mean_metrics(list(rows.values())), **rows}


def evaluate_pack(images: list[PackImage], sample_fn, scale: int, lpips_fn=None, keep=None) -> dict:
    """SR of every pack image by ``sample_fn(lr_up) -> sr``; per-image metrics and their mean. ``keep(name,
    sr)`` is called with each result (for pictures)."""
    rows = {}
    for im in images:
        sr = sample_fn(im.lr_up)
        rows[im.name] = all_metrics(sr, im.gt.to(sr.device), scale, lpips_fn)[0]
        if keep is not None:
            keep(im.name, sr[0].cpu())
    return {"images": rows, "mean": mean_metrics(list(rows.values()))}


def ranked(rows: dict[str, dict], metric: str = "psnr") -> list[str]:
    """Image names from the worst to the best by ``metric`` (higher is better; non-finite values last)."""

    def key(name: str) -> float:
        value = rows[name].get(metric)
        return math.inf if value is None else value

    return sorted(rows, key=key)
