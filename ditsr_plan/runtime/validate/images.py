"""The validation images: the three built-in crops (by role) or the user's own, each with a fixed LR.

``images=builtin`` gives three crops of scikit-image photographs chosen for their roles:
``high_texture`` (immunohistochemistry: dense cell texture), ``low_texture`` (the rocket's sky) and
``defocus`` (the cat, whose background is out of focus); ``images=role=path,role=path`` uses your own.
The LR is made once by the run's degradation with a fixed seed, so every eval sees the same input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import RunFailure
from ..seeds import generator
from ..train.data import fit_crop, load_image, shown, to_tensor
from ..train.degradation import DegradeSettings, degrade

# role -> (scikit-image photo, centre (y, x) of the crop); the plan language checks metric names against
# the same roles (settings/schemas.py BUILTIN_EVAL_ROLES; a test keeps the two equal)
BUILTIN_EVAL = {
    "high_texture": ("immunohistochemistry", (300, 190)),
    "low_texture": ("rocket", (80, 200)),
    "defocus": ("chelsea", (70, 380)),
}


class EvalImagesError(RunFailure):
    """Validation images that cannot be used (a missing file, a bad ROLE=PATH list, a size)."""


@dataclass
class EvalImage:
    role: str
    gt: torch.Tensor  # 1 x 3 x H x W in [-1, 1]
    lr_up: torch.Tensor  # the LR, bicubic-upsampled to the GT's size: the model's input and the baseline


def _crop_around(image: torch.Tensor, centre: tuple[int, int], size: int) -> torch.Tensor:
    image = fit_crop(image, size)
    h, w = image.shape[-2:]
    y = min(max(0, centre[0] - size // 2), h - size)
    x = min(max(0, centre[1] - size // 2), w - size)
    return image[:, y : y + size, x : x + size]


def eval_images(
    spec: str, size: int, multiple: int, scale: int, degradation: DegradeSettings, seed: int
) -> list[EvalImage]:
    """The validation set: GT crops (sides a multiple of ``multiple``) and their fixed LR (made by
    ``degradation``, the plan's degrade block, on the CPU)."""
    if spec == "builtin":
        import skimage.data

        gts = {
            role: _crop_around(to_tensor(getattr(skimage.data, photo)()), centre, size)
            for role, (photo, centre) in BUILTIN_EVAL.items()
        }
    else:
        gts = {}
        for item in spec.split(","):
            role, sep, path = item.partition("=")
            if not sep or not role.strip() or not path.strip():
                raise EvalImagesError(f"eval images: '{shown(item)}' is not ROLE=PATH")
            try:
                image = load_image(os.path.expanduser(path.strip()))
            except Exception as exc:  # unreadable, too large, not a regular file, non-finite samples
                raise EvalImagesError(
                    f"eval images: {shown(role.strip())}={shown(path.strip())}: cannot be read ({shown(str(exc))})"
                ) from None
            h, w = image.shape[-2:]
            gts[role.strip()] = image[:, : h - h % multiple, : w - w % multiple]
    out = []
    for role, gt in gts.items():
        if gt.shape[-1] % multiple or gt.shape[-2] % multiple or min(gt.shape[-2:]) == 0:
            raise EvalImagesError(f"eval image '{shown(role)}' must have sides that are multiples of {multiple}")
        gt = gt[None].contiguous()
        lr_up = degrade(gt, scale, degradation, generator(seed, "eval-lr", role))
        out.append(EvalImage(role, gt, lr_up))
    return out


def pretrained_lpips(device: torch.device):
    """LPIPS-Alex for the metric, when its pretrained trunk is already in torchvision's cache; else None.
    Never downloads, and never falls back to a random trunk (a random trunk's number would mislead)."""
    from torchvision.models import AlexNet_Weights

    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(AlexNet_Weights.IMAGENET1K_V1.url)
    if not cached.is_file():
        return None
    import warnings

    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        net = lpips.LPIPS(net="alex", pretrained=True, verbose=False).to(device).eval()
    return lambda a, b: net(a.float(), b.float()).flatten()


def save_png(image: torch.Tensor, path: Path) -> None:
    """3 x H x W in [-1, 1] -> an 8-bit PNG."""
    from PIL import Image

    array = ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(array).save(path)
