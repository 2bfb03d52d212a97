"""Pictures of validation: a grid per eval and a progression strip per image (matplotlib)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..train.terms.regions import edge_mask_from_gt, laplacian, luma


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


def _rgb(image: torch.Tensor):
    return ((image.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _scores(m: dict) -> str:
    return f"PSNR {m['psnr']:.2f}  SSIM {m['ssim']:.3f}  ESR {m['esr']:.2f}"


def eval_grid(
    results, metrics: dict[str, dict], bicubic: dict[str, dict], step: int, path: Path, title: str | None = None
) -> None:
    """One row per validation image: LR (bicubic-upsampled, with its metrics: the baseline), SR, GT, a zoom
    on the flattest (defocus) region of SR next to GT's, and |Laplacian(SR)| - |Laplacian(GT)| inside the
    flat mask (titled with FHR, the metric it shows)."""
    plt = _plt()
    rows = len(results)
    fig, axes = plt.subplots(rows, 5, figsize=(15, 3.2 * rows), squeeze=False)
    for r, (image, sr) in enumerate(results):
        gt = image.gt[0]
        m = metrics[image.role]
        zoom = max(8, gt.shape[-1] // 4)
        y, x = flattest_window(gt, zoom)
        pair = torch.cat([sr[:, y : y + zoom, x : x + zoom], gt[:, y : y + zoom, x : x + zoom]], dim=-1)
        heat = flat_heat(sr, gt).numpy()
        limit = max(1e-6, float(abs(heat).max()))
        base = bicubic[image.role]
        panels = [
            (_rgb(image.lr_up[0]), f"bicubic  {_scores(base)}"),
            (_rgb(sr), f"SR  {_scores(m)}"),
            (_rgb(gt), "GT"),
            (_rgb(pair), "flattest region: SR | GT"),
        ]
        for c, (picture, panel_title) in enumerate(panels):
            axes[r, c].imshow(picture, interpolation="nearest")
            axes[r, c].set_title(panel_title, fontsize=8)
        im = axes[r, 4].imshow(heat, cmap="RdBu_r", vmin=-limit, vmax=limit)
        heat_title = f"|lap SR|-|lap GT| in flat mask (FHR {m['fhr']:.2f}, bicubic {base['fhr']:.2f})"
        axes[r, 4].set_title(heat_title, fontsize=8)
        fig.colorbar(im, ax=axes[r, 4], fraction=0.046)
        axes[r, 0].set_ylabel(image.role, fontsize=10)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title or f"validation after {step} steps", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def progression_strips(eval_dir: Path, roles: list[str], gts: dict[str, torch.Tensor], most: int = 10) -> None:
    """``progress-<role>.png``: the SR of each image at every eval so far (the last ``most``), then GT."""
    from PIL import Image

    plt = _plt()
    steps = sorted(p for p in eval_dir.glob("step-*") if p.is_dir())[-most:]
    for role in roles:
        pictures = [
            (Image.open(p / f"{role}.png").convert("RGB"), f"step {int(p.name[5:])}")
            for p in steps
            if (p / f"{role}.png").is_file()
        ]
        pictures.append((_rgb(gts[role]), "GT"))
        fig, axes = plt.subplots(1, len(pictures), figsize=(2.2 * len(pictures), 2.6), squeeze=False)
        for ax, (picture, title) in zip(axes[0], pictures, strict=True):
            ax.imshow(picture, interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(role, fontsize=10)
        fig.tight_layout()
        fig.savefig(eval_dir / f"progress-{role}.png", dpi=90)
        plt.close(fig)
