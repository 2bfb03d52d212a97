"""Device and precision: CUDA with bf16 autocast when present, fp32 on CPU."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype, None for plain fp32

    @property
    def precision(self) -> str:
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)


class DeviceError(RuntimeError):
    pass


def place(device: str, precision: str, local_rank: int | None = None) -> Placement:
    """``device``: auto|cpu|cuda|cuda:N; ``precision``: auto (bf16 on CUDA, fp32 on CPU)|bf16|fp32.

    Under torchrun (``local_rank`` given) ``auto`` and ``cuda`` mean the GPU of the local rank."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"run device={device}, but CUDA is not available here; use device=auto or cpu")
    if dev.type == "cuda" and local_rank is not None:
        if dev.index is not None:
            raise DeviceError(
                f"run device={device} names one GPU, but torchrun gives each process its own: use device=auto or cuda"
            )
        if local_rank >= torch.cuda.device_count():
            raise DeviceError(f"local rank {local_rank}, but only {torch.cuda.device_count()} GPUs are visible")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if precision == "auto":
        precision = "bf16" if dev.type == "cuda" else "fp32"
    if precision == "bf16" and dev.type == "cpu":
        raise DeviceError("run precision=bf16 is for CUDA; CPU runs in fp32 (precision=auto)")
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Placement(dev, torch.bfloat16 if precision == "bf16" else None)
