"""Metrics: PSNR/SSIM against an independent reference of the SR convention, ESR/FHR on controlled images."""

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from scipy.signal import convolve2d

from ditsr_plan.runtime.validate.metrics import all_metrics, esr, fhr, from_uint8, psnr, ssim

# ---- an independent reference of BasicSR's calculate_psnr / calculate_ssim (numpy + scipy) -------------


def ref_y(img: np.ndarray) -> np.ndarray:
    """uint8 RGB -> Y of BT.601 YCbCr in [16, 235] (BasicSR's to_y_channel)."""
    x = img.astype(np.float64) / 255.0
    return x @ np.array([65.481, 128.553, 24.966]) + 16.0


def ref_psnr(a: np.ndarray, b: np.ndarray, border: int, y: bool) -> float:
    a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    a, b = (ref_y(a), ref_y(b)) if y else (a.astype(np.float64), b.astype(np.float64))
    return 10 * np.log10(255.0**2 / np.mean((a - b) ** 2))


def ref_ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    g /= g.sum()
    w = np.outer(g, g)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def f(x):
        return convolve2d(x, w[::-1, ::-1], mode="valid")

    mu_a, mu_b = f(a), f(b)
    var_a, var_b, cov = f(a * a) - mu_a**2, f(b * b) - mu_b**2, f(a * b) - mu_a * mu_b
    m = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(m.mean())


def ref_ssim(a: np.ndarray, b: np.ndarray, border: int, y: bool) -> float:
    a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    if y:
        return ref_ssim_channel(ref_y(a), ref_y(b))
    return float(
        np.mean([ref_ssim_channel(a[..., c].astype(np.float64), b[..., c].astype(np.float64)) for c in range(3)])
    )


def _sr_of(gt: np.ndarray, scale: int = 4) -> np.ndarray:
    """A plausible SR result: bicubic down and up, as 8-bit."""
    t = from_uint8(gt)
    h, w = t.shape[-2:]
    lr = F.interpolate(t, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)
    up = F.interpolate(lr, size=(h, w), mode="bicubic", align_corners=False).clamp(-1, 1)
    return ((up[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()


@pytest.mark.parametrize("photo", ["astronaut", "coffee", "chelsea"])
def test_psnr_ssim_match_the_reference_on_scikit_image_photos(photo):
    gt = getattr(skimage.data, photo)()[:128, :160]
    sr = _sr_of(gt)
    a, b = from_uint8(sr), from_uint8(gt)
    for y in (True, False):
        assert float(psnr(a, b, 4, y)[0]) == pytest.approx(ref_psnr(sr, gt, 4, y), abs=1e-3)
        assert float(ssim(a, b, 4, y)[0]) == pytest.approx(ref_ssim(sr, gt, 4, y), abs=1e-4)


def _gt() -> torch.Tensor:
    return from_uint8(skimage.data.chelsea()[50:178, 100:228])  # fur (texture), edges, smooth background


def test_region_metrics_are_one_for_the_gt_itself():
    gt = _gt()
    assert float(esr(gt, gt)[0]) == pytest.approx(1.0, abs=1e-6)
    assert float(fhr(gt, gt)[0]) == pytest.approx(1.0, abs=1e-6)


def test_blur_lowers_esr():
    import kornia

    gt = _gt()
    blurred = kornia.filters.gaussian_blur2d(gt, (9, 9), (2.0, 2.0))
    assert float(esr(blurred, gt)[0]) < 0.8


def test_fine_noise_and_unsharp_masking_raise_fhr():
    import kornia

    gt = _gt()
    noisy = (gt + 0.06 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    assert float(fhr(noisy, gt)[0]) > 1.3
    sharpened = kornia.filters.unsharp_mask(gt, (5, 5), (1.5, 1.5)).clamp(-1, 1)
    assert float(fhr(sharpened, gt)[0]) > 1.1


def test_all_metrics_reports_lpips_only_when_given_one():
    gt = _gt()
    rows = all_metrics(gt, gt, scale=4)
    assert rows[0]["lpips"] is None
    assert rows[0]["ssim"] == pytest.approx(1.0) and rows[0]["esr"] == pytest.approx(1.0)
    rows = all_metrics(gt, gt, scale=4, lpips_fn=lambda a, b: torch.zeros(a.shape[0]))
    assert rows[0]["lpips"] == 0.0


def test_identical_images_have_an_infinite_psnr_and_means_stay_meaningful():
    from ditsr_plan.runtime.validate.metrics import mean_metrics

    gt = _gt()
    assert float(psnr(gt, gt, 4)[0]) == float("inf")  # BasicSR returns inf, not 148 dB
    noisy = (gt + 0.02 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    perfect, other = all_metrics(gt, gt, 4)[0], all_metrics(noisy, gt, 4)[0]
    mean = mean_metrics([perfect, other])
    assert mean["psnr"] == pytest.approx(other["psnr"])  # the finite values' mean ...
    assert mean["perfect"] == 1  # ... and how many perfect images it leaves out
    assert mean_metrics([perfect, perfect])["psnr"] == float("inf")


def test_ratios_are_aggregated_by_their_geometric_mean():
    from ditsr_plan.runtime.validate.metrics import mean_metrics

    rows = [{"psnr": 30.0, "fhr": 13.0, "esr": 1.0}, {"psnr": 32.0, "fhr": 1.2, "esr": 0.25}]
    mean = mean_metrics(rows)
    assert mean["psnr"] == pytest.approx(31.0)
    assert mean["fhr"] == pytest.approx((13.0 * 1.2) ** 0.5)  # 3.95, not the arithmetic 7.1
    assert mean["esr"] == pytest.approx(0.5)


def test_region_ratios_have_a_floor_for_structureless_regions():
    flat = torch.full((1, 3, 64, 64), 0.2)
    assert float(fhr(flat, flat)[0]) == pytest.approx(1.0)  # was 0: no Laplacian at all in the GT
    assert float(esr(flat, flat)[0]) == pytest.approx(1.0)
    # one grey level of noise on a constant crop: a few times the floor, not 3.7e6
    grey = 2 / 255 * torch.randint(-1, 2, (1, 1, 64, 64), generator=torch.Generator().manual_seed(0)).float()
    noisy = flat + grey.expand(1, 3, 64, 64)
    value = float(fhr(noisy, flat)[0])
    assert 1.5 < value < 10


def test_ssim_of_a_512_px_image_agrees_with_the_reference():
    gt = skimage.data.astronaut()[:512, :512]
    sr = _sr_of(gt)
    a, b = from_uint8(sr), from_uint8(gt)
    assert float(ssim(a, b, 4, True)[0]) == pytest.approx(ref_ssim(sr, gt, 4, True), abs=1e-4)
