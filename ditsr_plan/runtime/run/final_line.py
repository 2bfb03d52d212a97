"""The last line a run prints about its validation: how far the final eval ended from the bicubic baseline.

``final: PSNR 0.42 dB above bicubic (39.52 vs 39.10), SSIM 0.0055 above (0.8891 vs 0.8836)`` -- the mean of
the validation images (PSNR and SSIM on Y, as ``eval.jsonl`` holds them), and the pack's mean when the eval
has a pack. A newcomer's first result says at once whether the model beats resizing.
"""

from __future__ import annotations

import math

from ..records import EvalRecord


def _versus(name: str, value, base, digits: int, unit: str = "") -> str | None:
    if not isinstance(value, int | float) or not isinstance(base, int | float):
        return None
    if not (math.isfinite(value) and math.isfinite(base)):
        return f"{name} {value} (bicubic {base:.{digits}f})"
    gap = value - base
    side = "above" if gap > 0 else "below" if gap < 0 else "equal to"
    amount = f"{abs(gap):.{digits}f}{unit} " if gap else ""
    return f"{name} {amount}{side} bicubic ({value:.{digits}f} vs {base:.{digits}f})"


def _both(mean: dict, base: dict) -> str | None:
    parts = [
        _versus("PSNR", mean.get("psnr"), base.get("psnr"), 2, " dB"),
        _versus("SSIM", mean.get("ssim"), base.get("ssim"), 4),
    ]
    shown = [p for p in parts if p]
    return ", ".join(shown) if shown else None


def final_versus_bicubic(record: EvalRecord | None) -> str | None:
    """``final: PSNR x dB above bicubic (...), SSIM ...`` of the last eval record; None without one."""
    if record is None:
        return None
    text = _both(record.mean, record.bicubic.get("mean", {}))
    if text is None:
        return None
    line = f"final: {text} (eval after {record.step} steps, mean of {len(record.images)} images)"
    if record.pack:
        pack = _both(record.pack.get("mean", {}), record.pack.get("bicubic", {}).get("mean", {}))
        if pack:
            line += f"; pack: {pack}"
    return line
