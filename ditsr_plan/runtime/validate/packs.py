"""Validation packs: a fixed set of GT crops with their LR, made once, validated on at every eval.

The reference validates on 50 DF2K crops (GT 512 / LR 128, made once with the training degradation) and
picks checkpoints on the pack's mean PSNR / LPIPS. A pack is a folder with one ``gt*`` and one ``lq*``
folder holding images of the same file names (``gt/`` + ``lq/`` as ``pack make`` writes them, or
``gt512/`` + ``lq128/`` as the reference's pack is laid out); the LR is bicubic-upsampled to the GT size on
loading (the model's input and the bicubic baseline).

The reference scripts' packs hold a third folder, ``lq512/``: the LR upsampled when the pack was made
(torch bicubic with antialias, before 8-bit rounding), named after the GT's size. ``eval pack_input=``
decides what the model is given: ``stored`` that folder (the model's input and the baseline, as the scripts
did), ``upsample`` the true LR upsampled here, ``auto`` the stored one when the pack holds one.

``make_pack`` is deterministic: the same sources and arguments write byte-identical files (PNG, and a
``manifest.json`` with the source files, crop boxes, seed, degradation and SHA-256 of every file).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ditsr_plan.settings.schemas import kind_of

from ..errors import RunFailure
from ..seeds import generator
from ..train.data import (
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    check_fitted,
    find_images,
    fit_crop,
    load_image,
    read_pixels,
    shown,
    to_tensor,
)
from ..train.degradation import DegradeSettings, apply, draw, upsample
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
    lr_up: torch.Tensor  # the LR, bicubic-upsampled to the GT's size (here, or stored in the pack)
    input: str = "upsample"  # "upsample": the true LR upsampled here; "stored": the pack's upsampled LR


def _png(image: torch.Tensor, path: Path) -> str:
    """3 x H x W in [-1, 1] -> an 8-bit PNG; its SHA-256."""
    save_png(image, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _safe(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-")[:40] or "image"


def _pack_settings(hr_dir: Path, out: Path, size: int, scale: int) -> None:
    if size % scale:
        raise PackError(f"pack make: --size {size} is not a multiple of --scale {scale}")
    if not hr_dir.is_dir():
        raise PackError(f"pack make: {shown(hr_dir)}: no such folder")
    if out.exists() and not out.is_dir():
        raise PackError(
            f"pack make: {shown(out)} exists and is not a folder; give a new folder (nothing was overwritten)"
        )
    if out.is_dir() and any(out.iterdir()):
        raise PackError(f"pack make: {shown(out)} exists and is not empty; give a new folder (nothing was overwritten)")


def _check_size(files: list[Path], size: int, max_pixels: int) -> None:
    """Refuse a ``size`` larger than every usable image (each would be upscaled), naming the largest
    available; reads headers only, and stops at the first image large enough (normally the first)."""
    from PIL import Image

    largest = 0
    for path in files:
        try:
            if not path.is_file():
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(path)
            with im:
                if im.size[0] * im.size[1] <= max_pixels:
                    largest = max(largest, min(im.size))
        except Exception:
            continue  # unreadable: skipped (or refused) when its turn comes
        if largest >= size:
            return
    if largest:
        raise PackError(
            f"pack make: --size {size} is larger than every image (the largest crop available is {largest}: "
            f"give --size {largest} or less)"
        )


def _crop_of(pixels, size: int, g: torch.Generator, max_pixels: int) -> tuple[torch.Tensor, list[int], bool]:
    """A ``size`` crop of H x W x 3 uint8 ``pixels`` at a position drawn from ``g`` (cut before it becomes
    float; an image smaller than the crop is upscaled first): the crop, its box, whether it was upscaled."""
    h, w = pixels.shape[:2]
    upscaled = min(h, w) < size
    if upscaled:
        check_fitted(h, w, size, max_pixels)
        image = fit_crop(to_tensor(pixels), size)
        h, w = image.shape[-2:]
    y = int(torch.randint(0, h - size + 1, (), generator=g))
    x = int(torch.randint(0, w - size + 1, (), generator=g))
    gt = image[:, y : y + size, x : x + size] if upscaled else to_tensor(pixels[y : y + size, x : x + size])
    return gt, [y, x, size, size], upscaled


@dataclass
class _Making:
    """What ``make_pack`` writes into its temporary folder: the settings, the entries, the skipped files."""

    hr_dir: Path
    tmp: Path
    degradation: DegradeSettings
    size: int
    scale: int
    seed: int
    strict: bool
    max_pixels: int
    progress: Callable[[str], None]
    entries: list[dict] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def add(self, path: Path, total: int) -> None:
        """Crop, degrade and write ``path`` as the next pack image; an unusable image is skipped and listed
        (an error under ``strict``)."""
        source = path.relative_to(self.hr_dir).as_posix()
        try:
            pixels = read_pixels(path, self.max_pixels)
            i = len(self.entries)
            g = generator(self.seed, "pack", i)
            gt, box, upscaled = _crop_of(pixels, self.size, g, self.max_pixels)
        except Exception as exc:
            if self.strict:
                raise PackError(f"pack make: cannot use {shown(source)}: {shown(str(exc))} (--strict)") from None
            self.skipped[source] = str(exc)
            self.progress(f"pack: skipping {shown(source)}: {shown(str(exc))}")
            return
        lr = apply(draw(self.degradation, g, (self.size, self.size), self.scale), gt[None], "pil")[0]
        name = f"{i:04d}_{_safe(path.stem)}.png"
        self.entries.append(
            {
                "name": name,
                "source": source,
                "box": box,
                "upscaled": upscaled,
                "gt_sha256": _png(gt, self.tmp / "gt" / name),
                "lq_sha256": _png(lr, self.tmp / "lq" / name),
            }
        )
        self.progress(f"pack: {i + 1}/{total} {name}")


def _missing_parents(folder: Path) -> list[Path]:
    """``folder``'s ancestors that do not exist yet, the deepest first (removed again on a failure)."""
    missing = []
    for parent in folder.absolute().parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing


def make_pack(
    hr_dir: Path,
    out: Path,
    degradation: DegradeSettings,
    n: int = 50,
    size: int = 512,
    scale: int = 4,
    seed: int = 3407,
    progress: Callable[[str], None] = lambda line: None,
    strict: bool = False,
    max_pixels: int = MAX_PIXELS,
) -> dict:
    """Pick ``n`` images of ``hr_dir`` (recursively) by ``seed``, crop ``size`` px from each at a position
    drawn from the seed, degrade each crop with ``degradation`` (the plan's degrade block, on the CPU) to
    ``size / scale`` and write ``out/gt/``, ``out/lq/`` and ``out/manifest.json``; return the manifest.

    The pack is built in a temporary sibling of ``out`` and renamed into place at the end: a failure (or
    an interrupt) leaves nothing. An image that cannot be read or is above ``max_pixels`` is skipped, the
    next one in the seed's order taken instead, and listed (manifest ``skipped``); ``strict`` refuses it."""
    hr_dir, out = Path(hr_dir), Path(out)
    _pack_settings(hr_dir, out, size, scale)
    files = find_images(hr_dir, cache=False)
    if not files:
        raise PackError(f"pack make: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {shown(hr_dir)}")
    order = torch.randperm(len(files), generator=generator(seed, "pack-pick")).tolist()
    files = [files[i] for i in order]
    _check_size(files, size, max_pixels)
    created = _missing_parents(out)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        making = _Making(hr_dir.resolve(), tmp, degradation, size, scale, seed, strict, max_pixels, progress)
        manifest = {**_write_pack(files, n, making), "source": str(hr_dir)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True, default=list) + "\n")
        os.replace(tmp, out)
    except BaseException as exc:
        _remove(tmp, created)
        if isinstance(exc, OSError):
            raise PackError(
                f"pack make: cannot write {shown(out)}: {exc.strerror or exc}"
                f"{f' ({shown(exc.filename)})' if exc.filename else ''}; nothing was written"
            ) from None
        raise
    return manifest


def _remove(tmp: Path, created: list[Path]) -> None:
    """Undo a pack make that failed: its temporary folder and the parent folders it created."""
    shutil.rmtree(tmp, ignore_errors=True)
    for parent in created:
        with contextlib.suppress(OSError):
            parent.rmdir()


def _write_pack(files: list[Path], n: int, making: _Making) -> dict:
    (making.tmp / "gt").mkdir()
    (making.tmp / "lq").mkdir()
    total = min(n, len(files))
    for path in files:
        if len(making.entries) == n:
            break
        making.add(path, total)
    if not making.entries:
        raise PackError(
            f"pack make: no usable image in {shown(making.hr_dir)} ({len(making.skipped)} skipped: "
            + _listed([f"{shown(k)} ({shown(v)})" for k, v in making.skipped.items()])
            + ")"
        )
    return {
        "format": PACK_FORMAT,
        "n": len(making.entries),
        "size": making.size,
        "scale": making.scale,
        "seed": making.seed,
        "degradation": {**making.degradation.model_dump(mode="json"), "kind": kind_of("degrade", making.degradation)},
        "images": making.entries,
        "skipped": making.skipped,
    }


def _one(folder: Path, prefix: str) -> Path:
    found = _all(folder, prefix)
    if len(found) > 1:
        raise PackError(
            f"pack {shown(folder)}: several {prefix}* folders ({', '.join(shown(d.name) for d in found)}); keep one"
        )
    return found[0]


def _all(folder: Path, prefix: str) -> list[Path]:
    found = sorted(d for d in folder.iterdir() if d.is_dir() and d.name.lower().startswith(prefix))
    if not found:
        raise PackError(
            f"pack {shown(folder)}: no {prefix}* folder (a pack holds {prefix}/ beside "
            f"{'lq' if prefix == 'gt' else 'gt'}/, e.g. gt512/ and lq128/)"
        )
    return found


def _number(name: str) -> str | None:
    digits = re.sub(r"\D", "", name)
    return digits or None


def pack_folders(folder: Path) -> tuple[Path, Path | None, Path | None]:
    """(GT folder, true LR folder, stored upsampled LR folder): one ``lq*`` folder is the true LR unless it is
    named after the GT's size (``gt512/`` + ``lq512/``); of two, the one named after the GT's size is the
    stored upsampled LR and the other the true LR (``gt512/``, ``lq128/``, ``lq512/``)."""
    gt, lqs = _one(folder, "gt"), _all(folder, "lq")
    if len(lqs) > 2:
        raise PackError(
            f"pack {shown(folder)}: {len(lqs)} lq* folders ({', '.join(shown(d.name) for d in lqs)}); a pack "
            "holds the true LR and at most one stored upsampled LR (gt512/, lq128/, lq512/)"
        )
    size = _number(gt.name)
    stored = [d for d in lqs if size is not None and _number(d.name) == size]
    true = [d for d in lqs if d not in stored]
    if len(lqs) == 2 and (len(stored), len(true)) != (1, 1):
        raise PackError(
            f"pack {shown(folder)}: two lq* folders ({', '.join(shown(d.name) for d in lqs)}) and neither named "
            f"after the GT folder {shown(gt.name)}/: name the stored upsampled LR by the GT's size and the true "
            "LR by its own (gt512/, lq512/, lq128/)"
        )
    return gt, (true[0] if true else None), (stored[0] if stored else None)


def _chosen_input(folder: Path, true: Path | None, stored: Path | None, pack_input: str) -> tuple[Path, str]:
    """The folder the model's input comes from and how (``stored`` or ``upsample``)."""
    if pack_input == "stored" or (pack_input == "auto" and stored is not None):
        if stored is None:
            raise PackError(
                f"pack {shown(folder)}: eval pack_input=stored, but the pack holds no stored upsampled LR (an "
                "lq* folder named after the GT's size, e.g. lq512/ beside gt512/): use pack_input=upsample"
            )
        return stored, "stored"
    if true is None:
        raise PackError(
            f"pack {shown(folder)}: eval pack_input=upsample, but the pack holds only the stored upsampled LR "
            f"{shown(stored.name if stored else 'lq')}/ (no true LR, e.g. lq128/): use pack_input=stored"
        )
    return true, "upsample"


def _listed(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def load_pack(
    folder: Path, scale: int, multiple: int = 1, limit: int | None = None, pack_input: str = "auto"
) -> list[PackImage]:
    """The pack's images (sorted by name; the first ``limit``): GT and the LR upsampled to it (``pack_input``:
    see the module). ``scale``: the run's factor (GT = scale x LR); ``multiple``: what the GT sides must be a
    multiple of."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise PackError(f"pack {shown(folder)}: no such folder")
    try:
        gt_dir, true, stored = pack_folders(folder)
        lq_dir, how = _chosen_input(folder, true, stored, pack_input)
        gts = _images(gt_dir)
        lqs = {d: _images(d) for d in (true, stored) if d is not None}
    except OSError as exc:
        raise PackError(f"pack {shown(folder)}: cannot list it: {exc.strerror or exc}") from None
    if not gts:
        raise PackError(f"pack {shown(folder)}: {shown(gt_dir.name)}/ holds no images")
    for lq, names in lqs.items():
        _same_names(folder, gt_dir.name, lq.name, gts, names)
    chosen = lqs[lq_dir]
    factor = 1 if how == "stored" else scale
    images = [_pair(folder, name, gts[name], chosen[name], factor, multiple) for name in sorted(gts)[:limit]]
    return [PackImage(im.name, im.gt, im.lr_up, how) for im in images]


def _images(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}


def _same_names(folder: Path, gt: str, lq: str, gts: dict, lqs: dict) -> None:
    only_gt, only_lq = sorted(set(gts) - set(lqs)), sorted(set(lqs) - set(gts))
    if only_gt or only_lq:
        parts = [
            f"only in {shown(gt)}/: {_listed([shown(n) for n in only_gt])}" if only_gt else "",
            f"only in {shown(lq)}/: {_listed([shown(n) for n in only_lq])}" if only_lq else "",
        ]
        raise PackError(
            f"pack {shown(folder)}: the file names of {shown(gt)}/ and {shown(lq)}/ differ ("
            + "; ".join(p for p in parts if p)
            + ")"
        )


def _pair(folder: Path, name: str, gt_path: Path, lq_path: Path, scale: int, multiple: int) -> PackImage:
    """One pack image: its GT and LR read, their sizes checked, the LR upsampled to the GT."""
    pair = []
    for path in (gt_path, lq_path):
        try:
            pair.append(load_image(path))
        except Exception as exc:
            raise PackError(
                f"pack {shown(folder)}: cannot read {shown(path.relative_to(folder))}: {shown(str(exc))}"
            ) from None
    gt, lq = pair
    (h, w), (lh, lw) = gt.shape[-2:], lq.shape[-2:]
    gt_name, lq_name = shown(gt_path.relative_to(folder).as_posix()), shown(lq_path.relative_to(folder).as_posix())
    if (lh * scale, lw * scale) != (h, w):
        need = (
            f"the run trains x{scale}, so the LR must be {w // scale} x {h // scale}"
            if scale > 1
            else "a stored upsampled LR must have the GT's size"
        )
        raise PackError(f"pack {shown(folder)}: {lq_name} is {lw} x {lh}, but {gt_name} is {w} x {h}: {need}")
    if h % multiple or w % multiple:
        raise PackError(
            f"pack {shown(folder)}: {gt_name} is {w} x {h}; the model needs sides that are multiples of "
            f"{multiple} (crop the pack, e.g. pack make --size 512)"
        )
    return PackImage(name, gt[None].contiguous(), lq[None].contiguous() if scale == 1 else upsample(lq[None], (h, w)))


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
