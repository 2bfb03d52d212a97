"""Validation: SR of fixed images with the EMA weights, metrics, ``eval.jsonl`` and pictures.

``eval every=N steps=S images=builtin lq_init=... cfg=...``:
- ``images=builtin`` gives three crops of scikit-image photographs chosen for their roles:
  ``high_texture`` (immunohistochemistry: dense cell texture), ``low_texture`` (the rocket's sky) and
  ``defocus`` (the cat, whose background is out of focus); ``images=role=path,role=path`` uses your own.
- The LR is made once by the run's degradation with a fixed seed, so every eval sees the same input.
- Sampling: diffusers' ``DDIMScheduler`` with v-prediction over ``steps`` steps, built from the plan's
  ``diffusion`` settings like the training scheduler. ``lq_init=s`` (the reference's ``strength``) skips
  the fraction ``s`` of the schedule: with the descending timesteps ``ts``, ``start = round(s (len(ts) - 1))``,
  the LR latent is noised to ``ts[start]`` and sampling runs ``ts[start:]`` (0.1 of 50 steps starts at
  t = 880); ``lq_init=0`` starts from pure noise. ``cfg`` > 1 mixes in the prediction without LR
  conditioning. The model is told augmentation level 0. With ``diffusion target=residual`` the sampler
  works on the residual (the LR-latent start is then the noised zero residual) and the LR latent is
  added back before decoding. Deterministic for the eval seed.
- The bicubic baseline: the metrics of the LR upsampled by bicubic (the model's input), computed once and
  written beside every eval's metrics, so that every number has its reference.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ditsr_plan.dsl.schemas import BUILTIN_EVAL_ROLES

from .data import _fit_crop, degrade, load_image, to_tensor
from .diffusion import make_scheduler
from .logs import read_evals, write_jsonl_line
from .metrics import all_metrics, mean_metrics
from .seeds import generator
from .terms.regions import edge_mask_from_gt, laplacian, luma

# role -> (scikit-image photo, centre (y, x) of the crop); the roles are the plan language's
BUILTIN_EVAL = dict(
    zip(
        BUILTIN_EVAL_ROLES,
        (("immunohistochemistry", (300, 190)), ("rocket", (80, 200)), ("chelsea", (70, 380))),
        strict=True,
    )
)


@dataclass
class EvalImage:
    role: str
    gt: torch.Tensor  # 1 x 3 x H x W in [-1, 1]
    lr_up: torch.Tensor


def _crop_around(image: torch.Tensor, centre: tuple[int, int], size: int) -> torch.Tensor:
    image = _fit_crop(image, size)
    h, w = image.shape[-2:]
    y = min(max(0, centre[0] - size // 2), h - size)
    x = min(max(0, centre[1] - size // 2), w - size)
    return image[:, y : y + size, x : x + size]


def eval_images(spec: str, size: int, multiple: int, scale: int, degrade_how: str, seed: int) -> list[EvalImage]:
    """The validation set: GT crops (sides a multiple of ``multiple``) and their fixed LR."""
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
                raise ValueError(f"eval images: '{item}' is not ROLE=PATH")
            image = load_image(os.path.expanduser(path.strip()))
            h, w = image.shape[-2:]
            gts[role.strip()] = image[:, : h - h % multiple, : w - w % multiple]
    out = []
    for role, gt in gts.items():
        if gt.shape[-1] % multiple or gt.shape[-2] % multiple:
            raise ValueError(f"eval image '{role}' must have sides that are multiples of {multiple}")
        gt = gt[None].contiguous()
        lr_up = degrade(gt, scale, degrade_how, generator(seed, "eval-lr", role))
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


class Evaluator:
    def __init__(self, trainer, settings: dict, run_dir: Path):
        self.trainer, self.settings = trainer, settings
        self.dir = run_dir / "eval"
        self.jsonl = run_dir / "eval.jsonl"
        data = trainer.data
        multiple = trainer.latent.factor * trainer.blocks["model"]["patch"]
        self.images = eval_images(
            settings["images"],
            settings["size"],
            multiple * data.scale,
            data.scale,
            data.settings.get("degrade", "bicubic"),
            settings["seed"],
        )
        self.lpips = pretrained_lpips(trainer.placement.device) if settings["lpips"] == "auto" else None
        self.bicubic = self._bicubic_baseline()
        inputs = self.dir / "inputs"
        inputs.mkdir(parents=True, exist_ok=True)
        for image in self.images:  # for compare's side-by-side picture, and for people
            save_png(image.gt[0], inputs / f"gt-{image.role}.png")
            save_png(image.lr_up[0], inputs / f"lr-{image.role}.png")

    def lpips_note(self) -> str:
        if self.lpips is not None:
            return "LPIPS (alex, pretrained)"
        return "LPIPS unavailable (pretrained AlexNet not in torchvision's cache; never from a random trunk)"

    def _bicubic_baseline(self) -> dict[str, dict]:
        """The metrics of the bicubic-upsampled LR (what the model is given), per role and their mean."""
        scale = self.trainer.data.scale
        rows = {image.role: all_metrics(image.lr_up, image.gt, scale, self.lpips)[0] for image in self.images}
        return {"mean": mean_metrics(list(rows.values())), **rows}

    @torch.no_grad()
    def sample(self, lr_up: torch.Tensor) -> torch.Tensor:
        """SR of one LR image with the EMA generator (or the generator without EMA)."""
        t = self.trainer
        model = t.ema.model if t.ema is not None else t.model
        was_training = model.training
        model.eval()
        sched = make_scheduler("ddim", t.blocks["diffusion"])
        sched.set_timesteps(self.settings["steps"])
        device = t.placement.device
        cond = t.latent.encode(lr_up.to(device))
        # target=residual: the sampler works on HR - LR latents; the LR latent is added back at the end
        base = cond if t.blocks["diffusion"]["target"] == "residual" else torch.zeros_like(cond)
        g = generator(self.settings["seed"], "eval-noise")
        noise = torch.randn(cond.shape, generator=g).to(device)
        timesteps = sched.timesteps
        strength = self.settings["lq_init"]
        if strength > 0:
            start = lq_init_start(len(timesteps), strength)
            timesteps = timesteps[start:]
            x = sched.add_noise(cond - base, noise, timesteps[:1])
        else:
            x = noise * sched.init_noise_sigma
        cfg = self.settings["cfg"]
        no_aug = torch.zeros(x.shape[0], device=device)
        with t.placement.autocast():
            for step_t in timesteps:
                tt = step_t.expand(x.shape[0]).to(device)
                v = model(x, cond, tt, no_aug).float()
                if cfg != 1:
                    v_uncond = model(x, torch.zeros_like(cond), tt, no_aug).float()
                    v = v_uncond + cfg * (v - v_uncond)
                x = sched.step(v, step_t, x).prev_sample
            sr = t.latent.decode(x + base).float().clamp(-1, 1)
        model.train(was_training)
        return sr

    def run(self, step: int) -> dict:
        """Evaluate after ``step`` completed steps: save images and the grid; return the record
        (``append`` writes it to eval.jsonl)."""
        folder = self.dir / f"step-{step:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        per_image, results = {}, []
        device = self.trainer.placement.device
        for image in self.images:
            sr = self.sample(image.lr_up)
            per_image[image.role] = all_metrics(sr, image.gt.to(device), self.trainer.data.scale, self.lpips)[0]
            save_png(sr[0].cpu(), folder / f"{image.role}.png")
            results.append((image, sr[0].cpu()))
        record = {
            "step": step,
            "images": per_image,
            "mean": mean_metrics(list(per_image.values())),
            "bicubic": self.bicubic,
            "lpips": self.lpips is not None,
        }
        from .pictures import eval_grid, progression_strips

        eval_grid(results, per_image, self.bicubic, step, self.dir / f"grid-{step:08d}.png")
        progression_strips(self.dir, [im.role for im in self.images], {im.role: im.gt[0] for im in self.images})
        return record

    def append(self, record: dict) -> None:
        write_jsonl_line(self.jsonl, record)

    def records(self) -> list[dict]:
        return read_evals(self.jsonl)


def lq_init_start(steps: int, strength: float) -> int:
    """Index of the first timestep sampled with ``lq_init=strength`` among ``steps`` descending timesteps:
    ``round(strength * (steps - 1))`` (the reference's ``get_lq_init_latents``; Python's rounding)."""
    return round(strength * (steps - 1))


def save_png(image: torch.Tensor, path: Path) -> None:
    """3 x H x W in [-1, 1] -> an 8-bit PNG."""
    from PIL import Image

    array = ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(array).save(path)


def flat_heat(sr: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """``(|lap SR| - |lap GT|) x flat mask`` (H x W): positive where SR invents texture in flat GT regions."""
    mask = 1 - edge_mask_from_gt(gt[None])[0, 0]
    lap = lambda x: laplacian(luma(x[None]), 4)[0, 0].abs()  # noqa: E731
    return (lap(sr) - lap(gt)) * mask


def flattest_window(gt: torch.Tensor, size: int) -> tuple[int, int]:
    """Top-left of the ``size`` window where the GT is flattest (the defocus zoom)."""
    flat = 1 - edge_mask_from_gt(gt[None])
    pooled = torch.nn.functional.avg_pool2d(flat, size, stride=max(1, size // 4))
    index = int(pooled.flatten().argmax())
    w = pooled.shape[-1]
    return (index // w) * max(1, size // 4), (index % w) * max(1, size // 4)
