"""Images for upscaling, in and out: what the model sees of a file, and the file made of its SR.

Read with the checks of the training data's decoder (the size from the header, refused above a limit before
any pixel is decoded; not a regular file refused), EXIF orientation applied. The model sees RGB in [-1, 1];
what is not RGB is kept apart and put back: grayscale (the SR's luma), 16-bit and deeper samples (scaled to
[0, 1] by their range and written as 16-bit), an alpha channel (resized bicubic, on its own).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..train.data import MAX_PIXELS, _nominal_range, decoded_image

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L")


@dataclass
class ModelInput:
    """An image as the model takes it: ``rgb`` 1 x 3 x H x W in [-1, 1]; ``gray``: write the SR's luma;
    ``deep``: write 16-bit samples; ``alpha``: H x W in [0, 1], or None."""

    rgb: torch.Tensor
    gray: bool = False
    deep: bool = False
    alpha: np.ndarray | None = None


def open_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS):
    """A decoded PIL image of ``path`` (the training data's :func:`decoded_image`: the size checked from the
    header before decoding), EXIF orientation applied."""
    from PIL import ImageOps

    im = decoded_image(path, max_pixels)
    turned = ImageOps.exif_transpose(im)
    if turned is not None and turned is not im:
        im.close()
        return turned
    return im


def model_input(im) -> ModelInput:
    """The model's view of a PIL image (any mode)."""
    alpha = None
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA") if im.mode in ("P", "PA", "RGBA") else im
        alpha = np.asarray(im.getchannel("A"), dtype=np.float32) / 255.0
        im = im.convert("RGB") if im.mode == "RGBA" else im.convert("L")
    deep = im.mode in ("I", "F") or im.mode.startswith("I;16")
    gray = deep or im.mode in ("L", "1")
    if deep:
        array = np.asarray(im).astype(np.float64)
        lo, hi = _nominal_range(array, im.mode)
        unit = ((array - lo) / (hi - lo)).clip(0, 1).astype(np.float32)
    else:
        unit = np.asarray(im.convert("L" if gray else "RGB"), dtype=np.float32) / 255.0
    planes = np.repeat(unit[None], 3, axis=0) if gray else unit.transpose(2, 0, 1)
    rgb = torch.from_numpy(np.ascontiguousarray(planes))[None] * 2 - 1
    return ModelInput(rgb, gray, deep, alpha)


def model_output(sr: torch.Tensor, like: ModelInput, size: tuple[int, int] | None = None):
    """The PIL image of an SR (1 x 3 x H x W in [-1, 1]) for an input like ``like``: the same mode family,
    resized (Lanczos) to ``size`` (width, height) when given, the alpha channel resized bicubic to it."""
    from PIL import Image

    unit = sr[0].float().cpu().clamp(-1, 1).add_(1).mul_(0.5)  # one image-sized copy, the rest in place
    if like.gray:
        luma = unit[0].mul_(LUMA[0]).add_(unit[1], alpha=LUMA[1]).add_(unit[2], alpha=LUMA[2])
        top = 65535 if like.deep else 255
        levels = luma.mul_(top).round_().clamp_(0, top).numpy()
        im = Image.fromarray(levels.astype(np.uint16)) if like.deep else Image.fromarray(levels.astype(np.uint8), "L")
    else:
        levels = unit.mul_(255).round_().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        im = Image.fromarray(levels, "RGB")
    if size is not None and size != im.size:
        im = im.resize(size, Image.Resampling.LANCZOS)
    if like.alpha is not None:
        alpha = Image.fromarray(np.rint(like.alpha * 255).astype(np.uint8), "L")
        alpha = alpha.resize(im.size, Image.Resampling.BICUBIC)
        im = Image.merge("LA", (im.convert("L"), alpha)) if like.gray else Image.merge("RGBA", (*im.split(), alpha))
    return im


def save_atomic(im, path: Path) -> None:
    """``im`` to ``path`` (format by suffix) through a temporary file beside it, renamed into place: a file
    of this name is either whole or not there. JPEG gets RGB (alpha dropped) or L at 8 bits."""
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        if im.mode == "I;16" or im.mode == "I":
            im = eight_bit(im)
        im = im.convert("L" if im.mode in ("L", "LA") else "RGB")
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP"}.get(suffix)
    fmt = fmt or ("TIFF" if suffix in (".tif", ".tiff") else "PNG")
    # a new file of an unpredictable name (O_EXCL: a link planted in OUT is never followed), readable as the
    # umask allows, like any file the user writes
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as fh:
            im.save(fh, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            tmp.unlink()


def eight_bit(im):
    """A 16-bit grayscale PIL image at 8 bits."""
    from PIL import Image

    return Image.fromarray((np.asarray(im).astype(np.float64) / 257).round().clip(0, 255).astype(np.uint8), "L")
