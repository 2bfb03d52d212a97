"""How an HR crop becomes its LR: ``bicubic``, ``highorder`` (the reference setup's) and ``realesrgan``
(Real-ESRGAN's second-order pipeline), their ranges from the plan's ``degrade`` block.

Degrading is split in two so that it can run on any device and give the same LR there:

- ``draw(settings, g, size, scale)`` makes a *recipe* -- every random choice (operations and their order,
  kernels, resize sizes and modes, noise levels and the seeds of the noise, JPEG qualities) -- from the
  sample's own CPU generator. It is cheap and runs where the crop is made (a DataLoader worker).
- ``apply(recipe, hr, codec)`` carries the recipe out with torch ops on whatever device ``hr`` is on. The
  noise tensors are drawn from CPU generators seeded by the recipe and moved to the device, so CPU and
  CUDA apply the same noise. JPEG: ``codec="pil"`` is libjpeg through Pillow (the CPU path), ``"kornia"``
  kornia's differentiable JPEG, batched on the device (the same standard tables and quality scaling; the
  two agree to about 40 dB on photographs, see tests/runtime/train/test_degradation.py).

Poisson noise is drawn as its Gaussian approximation (variance = mean, at 256 levels): an exact Poisson
draw depends on the device's generator, the approximation on a CPU-seeded normal draw only.
Images are N x 3 x H x W in [-1, 1]; noise levels are in units of the [0, 1] range, as the papers give them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ditsr_plan.settings.schemas import BicubicDegrade, HighorderDegrade, RealesrganDegrade

DegradeSettings = BicubicDegrade | HighorderDegrade | RealesrganDegrade

POISSON_LEVELS = 256.0  # 8-bit sources: Real-ESRGAN's 2 ** ceil(log2(unique values))
KERNEL_KINDS = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")


@dataclass
class Op:
    name: str  # blur | resize | noise | jpeg
    kernel: torch.Tensor | None = None  # blur: k x k, sums to 1
    size: tuple[int, int] | None = None  # resize: the output size
    mode: str = "bicubic"  # resize: nearest | bilinear | bicubic | area
    std: float = 0.0  # noise: Gaussian std ([0, 1] units), or the Poisson scale when poisson
    poisson: bool = False
    gray: bool = False
    seed: int = 0
    quality: int = 95  # jpeg


@dataclass
class Recipe:
    ops: list[Op] = field(default_factory=list)
    lr_size: tuple[int, int] = (0, 0)


# ---- random draws (CPU generator) -------------------------------------------------------------------


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _int(g: torch.Generator, lo: int, hi: int) -> int:
    """An integer in [lo, hi]."""
    return lo + int(torch.randint(0, hi - lo + 1, (), generator=g))


def _choice(g: torch.Generator, probs) -> int:
    return int(torch.multinomial(torch.tensor(probs, dtype=torch.float64), 1, generator=g))


def _odd(g: torch.Generator, sizes) -> int:
    lo, hi = int(sizes[0]) // 2, int(sizes[1]) // 2  # odd sizes 2k+1 in [lo, hi]
    return 2 * _int(g, lo, max(lo, hi - (1 - int(sizes[1]) % 2))) + 1


def _seed(g: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (), generator=g))


# ---- kernels -----------------------------------------------------------------------------------------


def anisotropic_kernel(size: int, sx: float, sy: float, theta: float, beta: float = 1.0, shape: str = "gaussian"):
    """A size x size blur kernel: Gaussian (beta 1), generalized Gaussian exp(-(d/2)^beta) or plateau
    1 / (1 + d^beta), with d = x^T Sigma^-1 x, Sigma the covariance rotated by theta; sums to 1."""
    ax = torch.arange(size, dtype=torch.float64) - size // 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * xx + s * yy, -s * xx + c * yy
    d = u**2 / sx**2 + v**2 / sy**2
    k = 1 / (1 + d**beta) if shape == "plateau" else torch.exp(-0.5 * d**beta)
    return (k / k.sum()).float()


def sinc_kernel(size: int, cutoff: float) -> torch.Tensor:
    """A circular low-pass (2-D sinc) kernel of cutoff frequency ``cutoff`` (radians), summing to 1."""
    ax = torch.arange(size, dtype=torch.float64) - size // 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    r = torch.sqrt(xx**2 + yy**2)
    k = cutoff * torch.special.bessel_j1(cutoff * r) / (2 * math.pi * r.clamp_min(1e-12))
    k[size // 2, size // 2] = cutoff**2 / (4 * math.pi)
    return (k / k.sum()).float()


def _realesrgan_kernel(g, s: RealesrganDegrade, sigma: tuple[float, float]) -> torch.Tensor:
    size = _odd(g, s.kernel)
    if float(torch.rand((), generator=g)) < s.sinc_prob:
        cutoff = _u(g, math.pi / 3, math.pi) if size < 13 else _u(g, math.pi / 5, math.pi)
        return sinc_kernel(size, cutoff)
    kind = KERNEL_KINDS[_choice(g, s.kernel_probs)]
    sx = _u(g, *sigma)
    sy, theta = (sx, 0.0) if kind.endswith("iso") and not kind.endswith("aniso") else (_u(g, *sigma), _u(g, 0, math.pi))
    if kind.startswith("generalized"):
        return anisotropic_kernel(size, sx, sy, theta, _u(g, *s.betag), "gaussian")
    if kind.startswith("plateau"):
        return anisotropic_kernel(size, sx, sy, theta, _u(g, *s.betap), "plateau")
    return anisotropic_kernel(size, sx, sy, theta)


# ---- recipes -----------------------------------------------------------------------------------------


def draw(settings: DegradeSettings, g: torch.Generator, size: tuple[int, int], scale: int) -> Recipe:
    """Every random choice of one sample's degradation, from its generator ``g``. ``settings``: the plan's
    degrade block."""
    lr_size = (size[0] // scale, size[1] // scale)
    if isinstance(settings, HighorderDegrade):
        return Recipe(_highorder(settings, g, size, lr_size), lr_size)
    if isinstance(settings, RealesrganDegrade):
        return Recipe(_realesrgan(settings, g, size, lr_size), lr_size)
    return Recipe([Op("resize", size=lr_size, mode="bicubic")], lr_size)


def _highorder(s: HighorderDegrade, g, size: tuple[int, int], lr_size) -> list[Op]:
    """Blur, resize, noise and JPEG in shuffled order; a second such stage with probability ``second``;
    then ``final`` down to the LR size."""
    ops: list[Op] = []
    h, w = size
    modes = [m.strip() for m in s.resize_modes.split(",")]
    for _ in range(2 if float(torch.rand((), generator=g)) < s.second else 1):
        for i in torch.randperm(4, generator=g).tolist():
            if i == 0 and float(torch.rand((), generator=g)) < s.blur_prob:
                k = _odd(g, s.kernel)
                if float(torch.rand((), generator=g)) < s.iso_prob:
                    sx = _u(g, *s.sigma)
                    ops.append(Op("blur", kernel=anisotropic_kernel(k, sx, sx, 0.0)))
                else:
                    sx, sy, theta = _u(g, *s.sigma), _u(g, *s.sigma), _u(g, 0, math.pi)
                    ops.append(Op("blur", kernel=anisotropic_kernel(k, sx, sy, theta)))
            elif i == 1:
                f, mode = _u(g, *s.resize), modes[_int(g, 0, len(modes) - 1)]
                h, w = max(4, round(h * f)), max(4, round(w * f))
                ops.append(Op("resize", size=(h, w), mode=mode))
            elif i == 2:
                ops.append(Op("noise", std=_u(g, *s.noise), seed=_seed(g)))
            elif i == 3:
                ops.append(Op("jpeg", quality=_int(g, int(s.jpeg[0]), int(s.jpeg[1]))))
    ops.append(Op("resize", size=lr_size, mode=s.final))
    return ops


def _rg_resize(g, factors: tuple[float, float], probs: tuple[float, ...], base: tuple[int, int]) -> Op:
    lo, hi = factors
    way = _choice(g, probs)  # up, down, keep
    f = _u(g, 1, hi) if way == 0 else _u(g, lo, 1) if way == 1 else 1.0
    mode = ("area", "bilinear", "bicubic")[_int(g, 0, 2)]
    return Op("resize", size=(max(4, int(base[0] * f)), max(4, int(base[1] * f))), mode=mode)


def _rg_noise(g, gray_prob: float, gaussian_prob: float, std: tuple[float, float], poisson: tuple[float, float]) -> Op:
    if float(torch.rand((), generator=g)) < gaussian_prob:
        level = _u(g, *std) / 255.0
        return Op("noise", std=level, gray=float(torch.rand((), generator=g)) < gray_prob, seed=_seed(g))
    scale = _u(g, *poisson)
    return Op("noise", std=scale, poisson=True, gray=float(torch.rand((), generator=g)) < gray_prob, seed=_seed(g))


def _realesrgan(s: RealesrganDegrade, g, size, lr_size) -> list[Op]:
    """Real-ESRGAN's second-order degradation (Wang et al. 2021, Table/config of RealESRGAN_x4plus)."""
    ops = [Op("blur", kernel=_realesrgan_kernel(g, s, s.sigma))]
    ops.append(_rg_resize(g, s.resize, s.resize_probs, size))
    ops.append(_rg_noise(g, s.gray_prob, s.noise_prob, s.noise, s.poisson))
    ops.append(Op("jpeg", quality=_int(g, int(s.jpeg[0]), int(s.jpeg[1]))))
    if float(torch.rand((), generator=g)) < s.second:
        if float(torch.rand((), generator=g)) < s.second_blur_prob:
            ops.append(Op("blur", kernel=_realesrgan_kernel(g, s, s.sigma2)))
        ops.append(_rg_resize(g, s.resize2, s.resize_probs2, lr_size))  # the second is relative to the LR size
        ops.append(_rg_noise(g, s.gray_prob, s.noise_prob2, s.noise2, s.poisson2))
    final = Op("resize", size=lr_size, mode=("area", "bilinear", "bicubic")[_int(g, 0, 2)])
    sinc = None
    if float(torch.rand((), generator=g)) < s.final_sinc_prob:
        k = _odd(g, s.kernel)
        sinc = Op("blur", kernel=sinc_kernel(k, _u(g, math.pi / 3, math.pi)))
    jpeg = Op("jpeg", quality=_int(g, int(s.jpeg2[0]), int(s.jpeg2[1])))
    tail = [final, sinc, jpeg] if float(torch.rand((), generator=g)) < 0.5 else [jpeg, final, sinc]
    ops.extend(op for op in tail if op is not None)
    return ops


# ---- applying a recipe (any device) -------------------------------------------------------------------


def _blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    k = kernel.to(x.device, x.dtype)
    pad = k.shape[-1] // 2
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect") if min(x.shape[-2:]) > pad else x
    return F.conv2d(x, k.expand(x.shape[1], 1, *k.shape), groups=x.shape[1])


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest" or mode == "area":
        return F.interpolate(x, size=size, mode=mode)
    shrinking = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=shrinking)


def _noise(x: torch.Tensor, op: Op) -> torch.Tensor:
    g = torch.Generator().manual_seed(op.seed)
    shape = (x.shape[0], 1 if op.gray else x.shape[1], *x.shape[-2:])
    z = torch.randn(shape, generator=g).to(x.device, x.dtype)
    if op.poisson:  # Gaussian approximation of Poisson(img * L) / L - img, scaled
        img01 = ((x + 1) / 2).clamp(0, 1)
        if op.gray:
            img01 = (img01 * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, True)
        noise = torch.sqrt(img01 / POISSON_LEVELS) * z * op.std
    else:
        noise = op.std * z
    return x + 2 * noise  # [0, 1] units -> [-1, 1]


def _jpeg_pil(x: torch.Tensor, quality: int) -> torch.Tensor:
    import io

    import numpy as np
    from PIL import Image

    out = []
    for img in x:
        array = ((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
        out.append(torch.tensor(decoded).permute(2, 0, 1).float() / 127.5 - 1)
    return torch.stack(out).to(x.device)


def _jpeg_kornia(x: torch.Tensor, quality: int) -> torch.Tensor:
    from kornia.enhance import jpeg_codec_differentiable

    q = torch.full((x.shape[0],), float(quality), device=x.device)
    img01 = ((x.clamp(-1, 1) + 1) / 2).float()
    return jpeg_codec_differentiable(img01, q).clamp(0, 1) * 2 - 1


def apply(recipe: Recipe, hr: torch.Tensor, codec: str = "pil") -> torch.Tensor:
    """The LR (1 x 3 x h x w, at the recipe's LR size) of ``hr`` (1 x 3 x H x W), on ``hr``'s device."""
    x = hr.float()
    with torch.no_grad():
        for op in recipe.ops:
            if op.name == "blur":
                assert op.kernel is not None
                x = _blur(x, op.kernel)
            elif op.name == "resize":
                assert op.size is not None
                x = _resize(x, op.size, op.mode)
            elif op.name == "noise":
                x = _noise(x, op)
            elif op.name == "jpeg":
                x = _jpeg_pil(x, op.quality) if codec == "pil" else _jpeg_kornia(x, op.quality)
            x = x.clamp(-1, 1)
    return x


def upsample(lr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """LR -> the HR size (bicubic): what the model is conditioned on, and the bicubic baseline."""
    return F.interpolate(lr, size=size, mode="bicubic", align_corners=False).clamp(-1, 1)


def degrade(
    hr: torch.Tensor, scale: int, settings: DegradeSettings, g: torch.Generator, codec: str = "pil"
) -> torch.Tensor:
    """HR batch (N x 3 x H x W) -> its LR re-upsampled to the HR size; one recipe per image, drawn from
    ``g`` in order."""
    recipes = [draw(settings, g, (hr.shape[-2], hr.shape[-1]), scale) for _ in hr]
    return degrade_batch(hr, recipes, codec)


def degrade_batch(hr: torch.Tensor, recipes: list[Recipe], codec: str = "kornia") -> torch.Tensor:
    """The device path: each image of ``hr`` (on the run's device) degraded by its recipe, re-upsampled."""
    size = (hr.shape[-2], hr.shape[-1])
    return torch.cat([upsample(apply(r, image[None], codec), size) for r, image in zip(recipes, hr, strict=True)])
