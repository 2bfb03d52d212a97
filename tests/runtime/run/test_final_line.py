"""The run's last validation line: how far its final eval ended from the bicubic baseline."""

import math

from ditsr_plan.runtime.records import EvalRecord
from ditsr_plan.runtime.run.final_line import final_versus_bicubic

BICUBIC = {"psnr": 39.1, "ssim": 0.8836, "esr": 0.56}


def record(psnr: float, ssim: float, pack: dict | None = None) -> EvalRecord:
    mean = {"psnr": psnr, "ssim": ssim, "esr": 0.7}
    images = {"a": mean, "b": mean, "c": mean}
    return EvalRecord(step=1200, images=images, mean=mean, bicubic={"mean": BICUBIC}, lpips=False, pack=pack)


def test_above_and_below_bicubic_are_said_with_the_gap():
    assert final_versus_bicubic(record(39.52, 0.8891)) == (
        "final: PSNR 0.42 dB above bicubic (39.52 vs 39.10), SSIM 0.0055 above bicubic (0.8891 vs 0.8836) "
        "(eval after 1200 steps, mean of 3 images)"
    )
    line = final_versus_bicubic(record(37.54, 0.8712))
    assert line is not None and "PSNR 1.56 dB below bicubic (37.54 vs 39.10)" in line
    assert "SSIM 0.0124 below bicubic" in line


def test_no_eval_no_line_and_a_nan_mean_is_shown_as_such():
    assert final_versus_bicubic(None) is None
    line = final_versus_bicubic(record(math.nan, 0.88))
    assert line is not None and "PSNR nan (bicubic 39.10)" in line


def test_the_pack_mean_follows():
    pack = {"mean": {"psnr": 30.0, "ssim": 0.8}, "bicubic": {"mean": {"psnr": 29.5, "ssim": 0.79}}, "images": {}}
    line = final_versus_bicubic(record(39.52, 0.8891, pack))
    assert line is not None and line.endswith(
        "; pack: PSNR 0.50 dB above bicubic (30.00 vs 29.50), SSIM 0.0100 above bicubic (0.8000 vs 0.7900)"
    )
