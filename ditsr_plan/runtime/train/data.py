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
Grayscale, 16-bit, 32-bit and float images are converted to 8-bit RGB by their samples' range (16-bit:
0..65535; float: 0..1 or 0..255 when the data lies in it; else the data's min..max); an alpha channel is
dropped. An image above ``max_pixels`` (default 100 MP, read from the header before decoding) is refused,
and a large image is cropped before it becomes float. An image that cannot be read or used is skipped and
counted (``strict=true`` makes it an error naming the file). File names are printed through :func:`shown`
(control characters escaped).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ditsr_plan.settings.schemas import (
    BicubicDegrade,
    BuiltinData,
    FolderData,
    HighorderDegrade,
    PairedData,
    RealesrganDegrade,
)

from ...terminal import shown
from ..errors import RunFailure
from ..seeds import generator
from .degradation import DegradeSettings, Recipe, degrade_batch, draw, upsample

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
BUILTIN_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")
SCENE_SIZE = 256
SCENE_SEED = 20261126  # the scenes are part of the data set: the same for every run
MAX_PIXELS = 100_000_000  # images above it are refused before decoding (data max_pixels=, pack make --max-pixels)


class DataError(RunFailure):
    pass


class ImageError(DataError):
    """An image file that cannot be used: too large, no pixels, non-finite samples."""


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


def fitted_size(h: int, w: int, crop: int) -> tuple[int, int]:
    """The size :func:`fit_crop` gives an ``h`` x ``w`` image: upscaled until its short side is ``crop``."""
    if min(h, w) >= crop:
        return h, w
    s = crop / min(h, w)
    return max(crop, math.ceil(h * s)), max(crop, math.ceil(w * s))


def check_fitted(h: int, w: int, crop: int, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse (``ImageError``) an image whose upscaling to the crop would exceed ``max_pixels`` (a thin strip)."""
    fh, fw = fitted_size(h, w, crop)
    if fh * fw > max_pixels:
        raise ImageError(
            f"{w} x {h} would be {fw} x {fh} once upscaled to the crop {crop}: " + _too_large(fw, fh, max_pixels)
        )


def fit_crop(image: torch.Tensor, crop: int) -> torch.Tensor:
    h, w = image.shape[-2:]
    if min(h, w) >= crop:
        return image
    size = fitted_size(h, w, crop)
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


def _pixels(n: int) -> str:
    return f"{n / 1e6:.4g} MP" if n >= 1_000_000 else f"{n} pixels"


def _too_large(w: int, h: int, max_pixels: int) -> str:
    return (
        f"{w} x {h} = {_pixels(w * h)} is above the limit of {_pixels(max_pixels)} (a decompression bomb, or a "
        "photo to downscale first; the limit is data max_pixels=, pack make --max-pixels)"
    )


def _nominal_range(array, mode: str) -> tuple[float, float]:
    """The value range an image's samples span: 16-bit 0..65535; float 0..1 or 0..255 when the data lies
    in it; 32-bit integers 0..255 or 0..65535 when the data lies in it; otherwise the data's own min..max."""
    import numpy as np

    if mode.startswith("I;16"):
        return 0.0, 65535.0
    if not np.isfinite(array).all():
        raise ImageError("its samples are not all finite (NaN or infinity)")
    lo, hi = float(array.min()), float(array.max())
    for top in (1.0, 255.0) if mode == "F" else (255.0, 65535.0):
        if lo >= 0 and hi <= top:
            return 0.0, top
    return lo, max(hi, lo + 1)


def _rgb8(im):
    """A decoded PIL image -> H x W x 3 uint8, deep (16-bit, 32-bit, float) samples scaled by their range."""
    import numpy as np

    if im.mode == "F" or im.mode == "I" or im.mode.startswith("I;16"):
        array = np.asarray(im)
        lo, hi = _nominal_range(array, im.mode)
        scaled = (array.astype(np.float32) - lo) * np.float32(255.0 / (hi - lo))
        grey = np.rint(scaled, out=scaled).clip(0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))


def decoded_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS):
    """An image file decoded by PIL, its size read from the header first: an image above ``max_pixels`` is
    refused before any pixel is decoded, and so is anything that is not a regular file (``ImageError``)."""
    import warnings

    from PIL import Image

    if not os.path.isfile(path):  # a FIFO or a device would block or never end
        raise ImageError("not a regular file" if os.path.exists(path) else "no such file")
    pillows_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # ours is checked below, before decoding
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)  # reads the header only
    finally:
        Image.MAX_IMAGE_PIXELS = pillows_limit
    w, h = im.size
    if w * h > max_pixels or w * h == 0:
        im.close()
        raise ImageError(_too_large(w, h, max_pixels) if w * h else f"it is {w} x {h} pixels")
    try:
        im.load()
    except BaseException:
        im.close()
        raise
    return im


def read_pixels(path: str | os.PathLike, max_pixels: int = MAX_PIXELS):
    """An image file -> H x W x 3 uint8 (crop it, then :func:`to_tensor`), decoded by :func:`decoded_image`.
    Grayscale, palette and CMYK become RGB; alpha is dropped; 16-bit, 32-bit and float samples are
    scaled by their range (a float image in 0..1 is not black); non-finite samples are refused."""
    with decoded_image(path, max_pixels) as im:
        return _rgb8(im)


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """An image file -> 3 x H x W in [-1, 1] (:func:`read_pixels`, whole)."""
    return to_tensor(read_pixels(path, max_pixels))


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


DataSettings = BuiltinData | FolderData | PairedData


# ---- data sets ------------------------------------------------------------------------------------


@dataclass
class DataStats:
    skipped: dict[str, str] = field(default_factory=dict)  # file -> why


class TrainingData:
    """``batch(step, micro)``: the micro-batch of a step, the same in every run with the same seed."""

    def __init__(
        self, settings: DataSettings, seed: int, degrade: DegradeSettings | None = None, device_type: str = "cpu"
    ):
        """``degrade``: the plan's degrade block (default: the data block's ``degrade=`` kind with its
        defaults, made on the CPU); ``device_type``: where the run trains (degrade on=auto makes the LR there
        when it is CUDA)."""
        self.settings, self.seed = settings, seed
        self.kind = {BuiltinData: "builtin", FolderData: "folder", PairedData: "paired"}[type(settings)]
        if degrade is None:
            written = "bicubic" if isinstance(settings, PairedData) else settings.degrade
            degrade = {"bicubic": BicubicDegrade, "highorder": HighorderDegrade, "realesrgan": RealesrganDegrade}[
                written
            ](on="cpu")
        self.degrade = degrade
        on = degrade.on
        self.on_device = self.kind != "paired" and (on == "device" or (on == "auto" and device_type == "cuda"))
        self.crop, self.scale, self.batch_size = settings.crop, settings.scale, settings.batch
        if self.crop % (self.scale * 4):
            raise DataError(f"data crop={self.crop} must be a multiple of 4 x scale ({4 * self.scale})")
        self.stats = DataStats()
        self.strict, self.max_pixels = False, MAX_PIXELS
        if isinstance(settings, BuiltinData):
            self.images = [(n, fit_crop(t, self.crop)) for n, t in builtin_images(settings.scenes)]
            self.files: list[Path] = []
        elif isinstance(settings, FolderData):
            self.strict, self.max_pixels = settings.strict, settings.max_pixels
            root = Path(settings.root)
            if not root.is_dir():
                raise DataError(f"data folder root={shown(root)}: no such folder")
            self.files = find_images(root)
            if not self.files:
                raise DataError(
                    f"data folder root={shown(root)}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in it"
                )
        else:
            self.strict, self.max_pixels = settings.strict, settings.max_pixels
            hr, lr = Path(settings.hr), Path(settings.lr)
            for p in (hr, lr):
                if not p.is_dir():
                    raise DataError(f"data paired: {shown(p)}: no such folder")
            lr_by_stem = {f.stem: f for f in find_images(lr)}
            self.files = [f for f in find_images(hr) if f.stem in lr_by_stem]
            self.lr_files = {f: lr_by_stem[f.stem] for f in self.files}
            if not self.files:
                raise DataError(f"data paired: no image of {shown(hr)} has a same-named image in {shown(lr)}")

    def __len__(self) -> int:
        return len(self.images) if self.kind == "builtin" else len(self.files)

    def _read(self, index: int):
        """The HR (and paired LR) pixels of file ``index`` as H x W x 3 uint8 (cropped before they become
        float), or None when it cannot be used (skipped and counted; an error under strict=true)."""
        path = self.files[index]
        try:
            hr = read_pixels(path, self.max_pixels)
            lr = read_pixels(self.lr_files[path], self.max_pixels) if self.kind == "paired" else None
            if lr is None:
                check_fitted(hr.shape[0], hr.shape[1], self.crop, self.max_pixels)
        except Exception as exc:
            if self.strict:
                raise DataError(f"cannot read image {shown(path)}: {shown(str(exc))} (data strict=true)") from None
            self.stats.skipped[str(path)] = str(exc)
            return None
        return hr, lr

    def _sample(self, g: torch.Generator):
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
        hrs: list[torch.Tensor] = []
        lrs: list[torch.Tensor | None] = []
        recipes: list[Recipe] = []
        known = set(self.stats.skipped)
        for i in range(first, first + self.batch_size):
            g = generator(self.seed, "data", step, micro, i)
            image, lr_image = self._sample(g)
            if lr_image is not None:
                hr, lr = self._paired_crop(image, lr_image, g)
                lr_up = upsample(lr[None], (hr.shape[-2], hr.shape[-1]))[0]
            else:
                hr, lr_up = self._crop(image, g), None
            if float(torch.rand((), generator=g)) < 0.5:
                hr = hr.flip(-1)
                lr_up = None if lr_up is None else lr_up.flip(-1)
            if lr_up is None:
                recipe = draw(self.degrade, g, (hr.shape[-2], hr.shape[-1]), self.scale)
                if self.on_device:
                    recipes.append(recipe)
                else:
                    lr_up = degrade_batch(hr[None], [recipe], "pil")[0]
            hrs.append(hr)
            lrs.append(lr_up)
        skipped = {path: why for path, why in self.stats.skipped.items() if path not in known}
        if self.on_device:
            return Batch(torch.stack(hrs).contiguous(), None, skipped, recipes)
        made = [lr for lr in lrs if lr is not None]  # on the CPU path every sample's LR is made here
        return Batch(torch.stack(hrs).contiguous(), torch.stack(made).contiguous(), skipped)

    def lr_up(self, batch: Batch, hr: torch.Tensor) -> torch.Tensor:
        """The batch's LR (re-upsampled) on ``hr``'s device: carried, or made there from its recipes."""
        if batch.lr_up is not None:
            return batch.lr_up.to(hr.device, non_blocking=True)
        assert batch.recipes is not None, "a batch without its LR carries its recipes"
        return degrade_batch(hr, batch.recipes, "kornia")

    def _crop(self, image, g: torch.Generator) -> torch.Tensor:
        """A ``crop`` x ``crop`` window of ``image`` (a 3 x H x W tensor, or H x W x 3 uint8 pixels, cut
        before they become float) at a position drawn from ``g``; a smaller image is upscaled first."""
        if not torch.is_tensor(image) and min(image.shape[:2]) < self.crop:
            image = to_tensor(image)  # small: upscaled whole
        if torch.is_tensor(image):
            image = fit_crop(image, self.crop)
        h, w = image.shape[-2:] if torch.is_tensor(image) else image.shape[:2]
        y = int(torch.randint(0, h - self.crop + 1, (), generator=g))
        x = int(torch.randint(0, w - self.crop + 1, (), generator=g))
        if torch.is_tensor(image):
            return image[:, y : y + self.crop, x : x + self.crop]
        return to_tensor(image[y : y + self.crop, x : x + self.crop])

    def _paired_crop(self, hr, lr, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Aligned crops of paired H x W x 3 uint8 pixels: ``crop`` of the HR, ``crop / scale`` of the LR."""
        s, c = self.scale, self.crop // self.scale
        h, w = lr.shape[:2]
        if hr.shape[0] < h * s or hr.shape[1] < w * s or min(h, w) < c:
            raise DataError(
                f"paired images must be HR = {s} x LR and at least the crop; got HR {tuple(hr.shape[:2])}, LR {(h, w)}"
            )
        y = int(torch.randint(0, h - c + 1, (), generator=g))
        x = int(torch.randint(0, w - c + 1, (), generator=g))
        return to_tensor(hr[y * s : (y + c) * s, x * s : (x + c) * s]), to_tensor(lr[y : y + c, x : x + c])


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
