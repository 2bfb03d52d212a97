"""The colour fix's effect: a photo's SR with each colour fix, the colour error of each, and a figure.

    python bench/color_fix.py RUN_OR_EXPORT [--out docs/color-fix.png]

Four photos of scikit-image (128 px GT, their 32 px bicubic LR) are upscaled with color_fix none, wavelet
and adain. The colour error is the mean absolute difference, in 8-bit levels, between the low-pass (the
wavelet's residual low frequencies) of the SR and of the GT: what drifts when the model shifts colours.
The figure shows the first photo: GT, bicubic, and the three SRs.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    import numpy as np
    import skimage.data
    import torch
    from PIL import Image, ImageDraw

    from ditsr_plan.runtime.train.degradation import upsample
    from ditsr_plan.runtime.upscale.job import load_model
    from ditsr_plan.runtime.validate.colorfix import low_pass

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    pipe = load_model(Path(args.model))
    photos = {n: getattr(skimage.data, n)() for n in ("coffee", "chelsea", "astronaut", "rocket")}
    errors: dict[str, list[float]] = {"none": [], "wavelet": [], "adain": []}
    panels = []
    for i, (_name, photo) in enumerate(photos.items()):
        h, w = photo.shape[:2]
        crop = photo[h // 2 - 64 : h // 2 + 64, w // 2 - 64 : w // 2 + 64]
        gt = torch.from_numpy(crop.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
        lr = torch.nn.functional.interpolate(gt, scale_factor=0.25, mode="bicubic", antialias=True).clamp(-1, 1)
        row = [gt, upsample(lr, (128, 128))]
        for how in errors:
            sr = pipe.upscale_tensor(lr, pipe.settings(color_fix=how))
            errors[how].append(float((low_pass(sr) - low_pass(gt)).abs().mean()) * 127.5)
            row.append(sr)
        if i == 0:
            panels = row
    for how, values in errors.items():
        print(f"color_fix {how}: colour error {np.mean(values):.2f} / 255 (per photo: "
              + ", ".join(f"{v:.2f}" for v in values) + ")")  # fmt: skip
    if args.out:
        labels = ["GT", "bicubic", "none", "wavelet", "adain"]
        sheet = Image.new("RGB", (5 * 130, 146), "white")
        for k, (label, t) in enumerate(zip(labels, panels, strict=True)):
            arr = ((t[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
            sheet.paste(Image.fromarray(arr), (k * 130 + 1, 17))
            ImageDraw.Draw(sheet).text((k * 130 + 4, 3), label, fill="black")
        sheet.save(args.out, optimize=True)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
