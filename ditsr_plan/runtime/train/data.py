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

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
BUILTIN_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")
SCENE_SIZE = 256
SCENE_SEED = 20261126  # the scenes are part of the data set: the same for every run


class DataError(RunFailure):
    pass


@dataclass
class Batch:
    hr: torch.Tensor
    lr_up: torch.Tensor
    skipped: dict[str, str] = field(default_factory=dict)  # files found unreadable while making it: why


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


# ---- degradations ---------------------------------------------------------------------------------


def bicubic_lr(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """HR (N x 3 x H x W) -> LR at 1/scale (antialiased bicubic)."""
    h, w = hr.shape[-2:]
    return F.interpolate(hr, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)


def upsample(lr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(lr, size=size, mode="bicubic", align_corners=False).clamp(-1, 1)


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _blur_kernel(g: torch.Generator) -> torch.Tensor:
    size = 7 + 2 * int(torch.randint(0, 8, (), generator=g))  # 7..21
    ax = torch.arange(size, dtype=torch.float32) - size // 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    if float(torch.rand((), generator=g)) < 0.5:  # isotropic
        sx = sy = _uniform(g, 0.2, 3.0)
        theta = 0.0
    else:  # anisotropic, rotated
        sx, sy, theta = _uniform(g, 0.2, 3.0), _uniform(g, 0.2, 3.0), _uniform(g, 0, math.pi)
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * xx + s * yy, -s * xx + c * yy
    k = torch.exp(-(u**2) / (2 * sx**2) - (v**2) / (2 * sy**2))
    return k / k.sum()


def _blur(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    k = _blur_kernel(g)
    pad = k.shape[-1] // 2
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect") if min(x.shape[-2:]) > pad else x
    return F.conv2d(x, k.expand(3, 1, *k.shape), groups=3)


def _resize(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    scale = _uniform(g, 0.3, 1.8)
    mode = ("nearest", "bilinear", "bicubic")[int(torch.randint(0, 3, (), generator=g))]
    h, w = x.shape[-2:]
    size = (max(4, round(h * scale)), max(4, round(w * scale)))
    return F.interpolate(x, size=size, mode=mode, **({} if mode == "nearest" else {"align_corners": False}))


def _noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    std = _uniform(g, 0.0, 0.05) * 2  # 0..0.05 of the [0, 1] range; images here span [-1, 1]
    return x + std * torch.randn(x.shape, generator=g)


def _jpeg(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    import io

    import numpy as np
    from PIL import Image

    quality = int(torch.randint(30, 96, (), generator=g))
    out = []
    for img in x:
        array = ((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
        out.append(to_tensor(decoded))
    return torch.stack(out)


OPS = (_blur, _resize, _noise, _jpeg)


def highorder_lr(hr: torch.Tensor, scale: int, g: torch.Generator) -> torch.Tensor:
    """The reference setup's high-order degradation: blur, resize, noise and JPEG in shuffled order;
    a second such stage with probability 0.35; then bicubic to 1/scale of the HR size."""
    x = hr
    stages = 2 if float(torch.rand((), generator=g)) < 0.35 else 1
    for _ in range(stages):
        for i in torch.randperm(len(OPS), generator=g).tolist():
            x = OPS[i](x, g).clamp(-1, 1)
    h, w = hr.shape[-2:]
    return F.interpolate(x, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)


def degrade(hr: torch.Tensor, scale: int, how: str, g: torch.Generator) -> torch.Tensor:
    """HR batch -> LR re-upsampled to the HR size (what the model is conditioned on)."""
    lr = bicubic_lr(hr, scale) if how == "bicubic" else highorder_lr(hr, scale, g)
    return upsample(lr.clamp(-1, 1), hr.shape[-2:])


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


def find_images(root: str | os.PathLike) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


# ---- data sets ------------------------------------------------------------------------------------


@dataclass
class DataStats:
    skipped: dict[str, str] = field(default_factory=dict)  # file -> why


class TrainingData:
    """``batch(step, micro)``: the micro-batch of a step, the same in every run with the same seed."""

    def __init__(self, kind: str, settings: dict, seed: int):
        self.kind, self.settings, self.seed = kind, settings, seed
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
        hrs, lrs = [], []
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
                lr_up = degrade(hr[None], self.scale, self.settings["degrade"], g)[0]
            hrs.append(hr)
            lrs.append(lr_up)
        skipped = {path: why for path, why in self.stats.skipped.items() if path not in known}
        return Batch(torch.stack(hrs).contiguous(), torch.stack(lrs).contiguous(), skipped)

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
