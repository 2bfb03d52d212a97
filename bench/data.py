"""Data throughput: HR crops per second, 512 px crops degraded to 128 px (x4), by the CPU path (in the
training process and with DataLoader workers; JPEG by libjpeg) and by the device path (recipes drawn in the
workers, the ops batched on the run's device; JPEG by kornia), for the reference's ``highorder`` and for
``realesrgan``. Target: data at least 3x faster than the generator consumes it (``--consumer``: the
generator's images/s at the reference configuration, e.g. gpu_step.py --model pixart-xl's stage C).

    python bench/data.py [--crop 512] [--batch 4] [--steps 6] [--workers 2] [--consumer IMAGES_PER_S]
"""

from __future__ import annotations

import argparse
import time

import torch

from ditsr_plan.runtime.train.data import StepBatches, TrainingData
from ditsr_plan.settings.schemas import BuiltinData, HighorderDegrade, RealesrganDegrade

KINDS = {"highorder": HighorderDegrade, "realesrgan": RealesrganDegrade}


def _data(kind: str, on: str, crop: int, batch: int, device: str) -> TrainingData:
    settings = BuiltinData(crop=crop, scale=4, batch=batch, degrade=kind, scenes=2, workers=0)
    return TrainingData(settings, 0, KINDS[kind](on=on), device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def rate(kind: str, on: str, crop: int, batch: int, steps: int, workers: int, device: torch.device) -> float:
    """HR crops per second, LR made (on ``device`` for the device path), the first step excluded."""
    data = _data(kind, on, crop, batch, device.type)
    loader = torch.utils.data.DataLoader(
        StepBatches(data, 0, steps + 1, 1),
        batch_size=None,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
    )
    start = None
    for step, _, b in loader:
        hr = b.hr.to(device, non_blocking=True)
        lr = data.lr_up(b, hr)
        _sync(device)
        assert lr.shape == hr.shape
        if step == 0:
            start = time.perf_counter()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--consumer", type=float, help="the generator's images/s to compare with")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device {name} · {args.crop} px crops, x4 · batch {args.batch} · {args.steps} batches each · "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"{'degradation':12} {'path':40} {'crops/s':>8}")
    best = 0.0
    for kind in KINDS:
        for on, workers, label in (
            ("cpu", 0, "cpu, in the training process"),
            ("cpu", args.workers, f"cpu, {args.workers} DataLoader workers"),
            ("device", 0, f"device ({device.type}), recipes in the process"),
            ("device", args.workers, f"device ({device.type}), recipes in {args.workers} workers"),
        ):
            r = rate(kind, on, args.crop, args.batch, args.steps, workers, device)
            best = max(best, r) if kind == "highorder" else best
            print(f"{kind:12} {label:40} {r:8.2f}")
    if args.consumer:
        print(
            f"highorder, fastest path: {best:.2f} crops/s vs the generator's {args.consumer:.2f} images/s -> "
            f"{best / args.consumer:.1f}x (target >= 3x)"
        )


if __name__ == "__main__":
    main()
