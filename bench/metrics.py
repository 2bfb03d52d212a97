"""Time the validation metrics of one 512 px image on the CPU (target: all of them under 150 ms).

``python bench/metrics.py [--size 512] [--runs 15]``: median wall time of each metric of
``ditsr_plan.runtime.validate.metrics`` on a scikit-image photograph against its bicubic x4 reconstruction, their
sum (``all_metrics``), and SSIM with the full 11 x 11 window (one 2-D convolution: what the metric did
before it used two 1-D passes) side by side with the separable SSIM. LPIPS is not included: offline
there is no pretrained trunk to time (it is reported as unavailable, never computed from a random trunk).
"""

from __future__ import annotations

import argparse
import statistics
import time

import skimage.data
import torch
import torch.nn.functional as F

from ditsr_plan.runtime.validate import metrics


def _median_ms(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def ssim_full_window(sr: torch.Tensor, gt: torch.Tensor, crop_border: int, y_channel: bool) -> torch.Tensor:
    """SSIM with one 11 x 11 2-D convolution per map (the non-separable form; same maths)."""
    a, b = metrics._to_255(sr, y_channel, crop_border), metrics._to_255(gt, y_channel, crop_border)
    c = a.shape[1]
    g = metrics._gaussian_1d(dtype=a.dtype)
    window = torch.outer(g, g).expand(c, 1, 11, 11)

    def filt(x):
        return F.conv2d(x, window, groups=c)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = filt(a), filt(b)
    var_a, var_b, cov = filt(a * a) - mu_a**2, filt(b * b) - mu_b**2, filt(a * b) - mu_a * mu_b
    m = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return m.mean(dim=(2, 3)).mean(dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    size = args.size
    gt = metrics.from_uint8(skimage.data.astronaut()[:size, :size])
    lr = F.interpolate(gt, size=(size // 4, size // 4), mode="bicubic", antialias=True, align_corners=False)
    sr = F.interpolate(lr, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)
    rows = {
        "psnr (Y)": lambda: metrics.psnr(sr, gt, 4, True),
        "ssim (Y)": lambda: metrics.ssim(sr, gt, 4, True),
        "psnr (RGB)": lambda: metrics.psnr(sr, gt, 4, False),
        "ssim (RGB)": lambda: metrics.ssim(sr, gt, 4, False),
        "esr": lambda: metrics.esr(sr, gt),
        "fhr": lambda: metrics.fhr(sr, gt),
        "all_metrics": lambda: metrics.all_metrics(sr, gt, 4),
    }
    print(f"{size} px image, {torch.get_num_threads()} torch threads, median of {args.runs} runs")
    for name, fn in rows.items():
        print(f"  {name:<12} {_median_ms(fn, args.runs):8.1f} ms")
    for y, label in ((True, "Y"), (False, "RGB")):
        full = _median_ms(lambda y=y: ssim_full_window(sr, gt, 4, y), args.runs)
        separable = _median_ms(lambda y=y: metrics.ssim(sr, gt, 4, y), args.runs)
        same = abs(float(ssim_full_window(sr, gt, 4, y)[0]) - float(metrics.ssim(sr, gt, 4, y)[0]))
        print(
            f"  ssim ({label}) full 11x11 window {full:.1f} ms vs separable {separable:.1f} ms: "
            f"{full / separable:.1f}x (values differ by {same:.1e})"
        )


if __name__ == "__main__":
    main()
