"""Training data: HR crops and their degraded, re-upsampled LR, as N x 3 x H x W tensors in [-1, 1].

A batch is a pure function of (run seed, step, micro-batch), and each of its samples of (seed, step,
micro-batch, sample index): resuming at step S reads exactly the
batches an uninterrupted run would, with or without worker processes.

- ``builtin``: scikit-image's photographs (nothing to download) plus procedural defocus scenes
  (a sharp, textured foreground over a Gaussian-blurred background), so that the flat/defocus regions
  the loss notes care about are in the default data.
- ``folder``: HR images found recursively under ``root``; LR made on the fly by ``degrade``.
- ``paired``: HR and LR images with the same names in two folders.

Images smaller than the crop are upscaled (bicubic) until their short side equals the crop.
Grayscale and 16-bit images are converted to 8-bit RGB; an alpha channel is dropped. An image that
cannot be read is skipped and counted (``strict=true`` makes it an error naming the file).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import RunFailure
from ..seeds import generator
from .degradation import Recipe, degrade_batch, draw, upsample

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
BUILTIN_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")
SCENE_SIZE = 256
SCENE_SEED = 20261126  # the scenes are part of the data set: the same for every run


class DataError(RunFailure):
    pass


@dataclass
class Batch:
    hr: torch.Tensor
    lr_up: torch.Tensor | None  # None when the LR is made on the run's device from ``recipes``
    skipped: dict[str, str] = field(default_factory=dict)  # files found unreadable while making it: why
    recipes: list[Recipe] | None = None  # degrade on=device: each sample's degradation, drawn, not applied

    def pin_memory(self) -> Batch:
        """For DataLoader(pin_memory=True): page-locked tensors copy to the GPU asynchronously."""
        lr_up = None if self.lr_up is None else self.lr_up.pin_memory()
        return Batch(self.hr.pin_memory(), lr_up, self.skipped, self.recipes)


def to_tensor(array) -> torch.Tensor:
    """H x W x 3 uint8 -> 3 x H x W float in [-1, 1]."""
    t = torch.tensor(array).permute(2, 0, 1).float() / 127.5 - 1
    return t.contiguous()


def fit_crop(image: torch.Tensor, crop: int) -> torch.Tensor:
    h, w = image.shape[-2:]
    if min(h, w) >= crop:
        return image
    s = crop / min(h, w)
    size = (max(crop, math.ceil(h * s)), max(crop, math.ceil(w * s)))
    return F.interpolate(image[None], size=size, mode="bicubic", align_corners=False)[0].clamp(-1, 1)


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


# ---- images ---------------------------------------------------------------------------------------


def defocus_scene(index: int, size: int = SCENE_SIZE) -> torch.Tensor:
    """A sharp, textured foreground over a Gaussian-blurred background, 3 x size x size in [-1, 1]."""
    import kornia

    g = generator(SCENE_SEED, "scene", index)
    coarse = (torch.rand((1, 3, 6, 6), generator=g) * 2 - 1) * 0.6
    background = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    background = background + 0.3 * torch.randn((1, 3, size, size), generator=g)
    sigma = _uniform(g, 5.0, 10.0)
    background = kornia.filters.gaussian_blur2d(background, (61, 61), (sigma, sigma))[0]
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    image = background
    for _ in range(2 + int(torch.randint(0, 3, (), generator=g))):
        cy, cx = _uniform(g, 0.2, 0.8) * size, _uniform(g, 0.2, 0.8) * size
        ry, rx = _uniform(g, 0.08, 0.25) * size, _uniform(g, 0.08, 0.25) * size
        shape = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        if float(torch.rand((), generator=g)) < 0.5:
            shape = ((yy - cy).abs() <= ry) & ((xx - cx).abs() <= rx)
        angle, freq = _uniform(g, 0, math.pi), _uniform(g, 0.4, 1.4)
        kind = int(torch.randint(0, 3, (), generator=g))
        u = math.cos(angle) * xx + math.sin(angle) * yy
        if kind == 0:
            texture = torch.sin(u * freq)
        elif kind == 1:
            v = -math.sin(angle) * xx + math.cos(angle) * yy
            texture = torch.sign(torch.sin(u * freq / 2) * torch.sin(v * freq / 2))
        else:
            texture = torch.rand((size, size), generator=g) * 2 - 1
        color = torch.rand((3, 1, 1), generator=g) * 1.4 - 0.7
        fg = (color + 0.35 * texture).clamp(-1, 1)
        image = torch.where(shape, fg, image)
    return image.clamp(-1, 1)


def builtin_images(scenes: int) -> list[tuple[str, torch.Tensor]]:
    import skimage.data

    photos = [(name, to_tensor(getattr(skimage.data, name)())) for name in BUILTIN_PHOTOS]
    return photos + [(f"defocus_scene_{i}", defocus_scene(i)) for i in range(scenes)]


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """An image file -> 3 x H x W in [-1, 1]: grayscale and 16-bit converted, alpha dropped."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            array = np.asarray(im, dtype=np.float64)
            array = (array / (65535.0 if array.max() > 255 else 255.0) * 255.0).clip(0, 255).astype(np.uint8)
            im = Image.fromarray(array)
        rgb = im.convert("RGB")
        return to_tensor(np.asarray(rgb))


def _scan(root: Path) -> tuple[list[Path], dict[str, int]]:
    files, dirs = [], {}
    for folder, subdirs, names in os.walk(root):
        dirs[folder] = os.stat(folder).st_mtime_ns
        subdirs.sort()
        files += [Path(folder) / n for n in names if Path(n).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files), dirs


def find_images(root: str | os.PathLike, cache: bool = True) -> list[Path]:
    """The image files under ``root`` (recursively), sorted. The list is cached (in the compile cache's
    folder) and reused while no folder under ``root`` has a new modification time (adding, removing or
    renaming a file changes its folder's), so a large folder is listed once, not at every start."""
    import hashlib
    import json

    from ditsr_plan.compiler.cache import cache_dir

    root = Path(root).resolve()
    if not cache:
        return _scan(root)[0]
    path = cache_dir() / "file-lists" / (hashlib.sha256(str(root).encode()).hexdigest()[:24] + ".json")
    try:
        saved = json.loads(path.read_text())
        if all(os.stat(d).st_mtime_ns == m for d, m in saved["dirs"].items()):
            return [root / f for f in saved["files"]]
    except (OSError, ValueError, KeyError):
        pass
    files, dirs = _scan(root)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"dirs": dirs, "files": [str(f.relative_to(root)) for f in files]}))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache: list every time
    return files


# ---- data sets ------------------------------------------------------------------------------------


@dataclass
class DataStats:
    skipped: dict[str, str] = field(default_factory=dict)  # file -> why


class TrainingData:
    """``batch(step, micro)``: the micro-batch of a step, the same in every run with the same seed."""

    def __init__(self, kind: str, settings: dict, seed: int, degrade: dict | None = None, device_type: str = "cpu"):
        """``degrade``: the plan's degrade block with its ``kind`` (default: bicubic); ``device_type``: where
        the run trains (degrade on=auto makes the LR there when it is CUDA)."""
        self.kind, self.settings, self.seed = kind, settings, seed
        self.degrade = degrade or {"kind": settings.get("degrade", "bicubic"), "on": "cpu"}
        on = self.degrade.get("on", "auto")
        self.on_device = kind != "paired" and (on == "device" or (on == "auto" and device_type == "cuda"))
        self.crop, self.scale, self.batch_size = settings["crop"], settings["scale"], settings["batch"]
        if self.crop % (self.scale * 4):
            raise DataError(f"data crop={self.crop} must be a multiple of 4 x scale ({4 * self.scale})")
        self.stats = DataStats()
        self.strict = settings.get("strict", False)
        if kind == "builtin":
            self.images = [(n, fit_crop(t, self.crop)) for n, t in builtin_images(settings["scenes"])]
            self.files: list[Path] = []
        elif kind == "folder":
            root = Path(settings["root"])
            if not root.is_dir():
                raise DataError(f"data folder root={root}: no such folder")
            self.files = find_images(root)
            if not self.files:
                raise DataError(f"data folder root={root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in it")
        elif kind == "paired":
            hr, lr = Path(settings["hr"]), Path(settings["lr"])
            for p in (hr, lr):
                if not p.is_dir():
                    raise DataError(f"data paired: {p}: no such folder")
            lr_by_stem = {f.stem: f for f in find_images(lr)}
            self.files = [f for f in find_images(hr) if f.stem in lr_by_stem]
            self.lr_files = {f: lr_by_stem[f.stem] for f in self.files}
            if not self.files:
                raise DataError(f"data paired: no image of {hr} has a same-named image in {lr}")
        else:
            raise DataError(f"unknown data kind {kind!r}")

    def __len__(self) -> int:
        return len(self.images) if self.kind == "builtin" else len(self.files)

    def _read(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        path = self.files[index]
        try:
            hr = load_image(path)
            lr = load_image(self.lr_files[path]) if self.kind == "paired" else None
        except Exception as exc:
            if self.strict:
                raise DataError(f"cannot read image {path}: {exc} (data strict=true)") from None
            self.stats.skipped[str(path)] = str(exc)
            return None
        return hr, lr

    def _sample(self, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        for _ in range(100):
            index = int(torch.randint(0, len(self), (), generator=g))
            if self.kind == "builtin":
                return self.images[index][1], None
            if str(self.files[index]) in self.stats.skipped:
                continue
            got = self._read(index)
            if got is not None:
                return got
        raise DataError(f"no readable image found after 100 tries; {len(self.stats.skipped)} files skipped")

    def batch(self, step: int, micro: int = 0, first: int = 0) -> Batch:
        """Samples ``first .. first + batch - 1`` of micro-batch ``micro`` of ``step``. Sample ``i`` is drawn
        from its own generator, seeded by (seed, step, micro, i): under DDP rank ``r`` takes samples
        ``r * batch ..``, so N ranks of batch b see exactly the samples of one process of batch N x b."""
        hrs, lrs, recipes = [], [], []
        known = set(self.stats.skipped)
        for i in range(first, first + self.batch_size):
            g = generator(self.seed, "data", step, micro, i)
            image, lr_image = self._sample(g)
            if lr_image is not None:
                hr, lr = self._paired_crop(image, lr_image, g)
                lr_up = upsample(lr[None], hr.shape[-2:])[0]
            else:
                image = fit_crop(image, self.crop)
                h, w = image.shape[-2:]
                y = int(torch.randint(0, h - self.crop + 1, (), generator=g))
                x = int(torch.randint(0, w - self.crop + 1, (), generator=g))
                hr = image[:, y : y + self.crop, x : x + self.crop]
                lr_up = None
            if float(torch.rand((), generator=g)) < 0.5:
                hr = hr.flip(-1)
                lr_up = None if lr_up is None else lr_up.flip(-1)
            if lr_up is None:
                recipe = draw(self.degrade, g, tuple(hr.shape[-2:]), self.scale)
                if self.on_device:
                    recipes.append(recipe)
                else:
                    lr_up = degrade_batch(hr[None], [recipe], "pil")[0]
            hrs.append(hr)
            lrs.append(lr_up)
        skipped = {path: why for path, why in self.stats.skipped.items() if path not in known}
        if self.on_device:
            return Batch(torch.stack(hrs).contiguous(), None, skipped, recipes)
        return Batch(torch.stack(hrs).contiguous(), torch.stack(lrs).contiguous(), skipped)

    def lr_up(self, batch: Batch, hr: torch.Tensor) -> torch.Tensor:
        """The batch's LR (re-upsampled) on ``hr``'s device: carried, or made there from its recipes."""
        if batch.lr_up is not None:
            return batch.lr_up.to(hr.device, non_blocking=True)
        return degrade_batch(hr, batch.recipes, "kornia")

    def _paired_crop(self, hr: torch.Tensor, lr: torch.Tensor, g: torch.Generator):
        s, c = self.scale, self.crop // self.scale
        h, w = lr.shape[-2:]
        if hr.shape[-2] < h * s or hr.shape[-1] < w * s or min(h, w) < c:
            raise DataError(
                f"paired images must be HR = {s} x LR and at least the crop; got HR {tuple(hr.shape[-2:])}, LR {(h, w)}"
            )
        y = int(torch.randint(0, h - c + 1, (), generator=g))
        x = int(torch.randint(0, w - c + 1, (), generator=g))
        return hr[:, y * s : (y + c) * s, x * s : (x + c) * s], lr[:, y : y + c, x : x + c]


class StepBatches(torch.utils.data.Dataset):
    """Item ``i`` is micro-batch ``i % accum`` of step ``start + i // accum``: lets a DataLoader
    prefetch with worker processes while keeping every batch a function of its step. ``first`` is the
    index of this process's first sample in the step's global batch (rank x batch under DDP)."""

    def __init__(self, data: TrainingData, start: int, total: int, accum: int, first: int = 0):
        self.data, self.start, self.total, self.accum, self.first = data, start, total, accum, first

    def __len__(self) -> int:
        return (self.total - self.start) * self.accum

    def __getitem__(self, i: int) -> tuple[int, int, Batch]:
        step, micro = self.start + i // self.accum, i % self.accum
        return step, micro, self.data.batch(step, micro, self.first)
