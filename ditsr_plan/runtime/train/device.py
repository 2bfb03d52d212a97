"""Device and precision: CUDA with bf16 autocast when present, fp32 on CPU."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from ..errors import RunFailure


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


class DeviceError(RunFailure):
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


def usable_cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return list(range(os.cpu_count() or 1))


def _cpu_times(cores: list[int]) -> tuple[float, float] | None:
    """(busy, total) jiffies of ``cores`` from /proc/stat; None where there is no /proc."""
    wanted = {f"cpu{c}" for c in cores}
    busy = total = 0.0
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            for line in fh:
                fields = line.split()
                if fields and fields[0] in wanted:
                    values = [float(v) for v in fields[1:9]]
                    total += sum(values)
                    busy += sum(values) - values[3] - values[4]  # idle, iowait
    except OSError:
        return None
    return busy, total


def busy_cores(window: float = 0.25) -> float:
    """How many of this process's usable cores other programs keep busy right now (measured over
    ``window`` seconds while this process sleeps); 0 where it cannot be measured."""
    import time

    cores = usable_cores()
    before = _cpu_times(cores)
    if before is None:
        return 0.0
    time.sleep(window)
    after = _cpu_times(cores)
    if after is None or after[1] <= before[1]:
        return 0.0
    return len(cores) * (after[0] - before[0]) / (after[1] - before[1])


def auto_threads(processes_here: int = 1, busy: float | None = None) -> int:
    """``run threads=auto``: ``OMP_NUM_THREADS`` when set; else the cores this process may use, shared
    among the ``processes_here`` processes of a torchrun on this machine, and no more than the cores that
    other programs leave idle (measured at start), at least 1. An OpenMP thread that shares a core with a
    busy process stalls every parallel region: on 2 cores with one busy process, 2 threads made a demo
    step 3-6x slower while 1 thread lost nothing (bench/threads.py)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    cores = len(usable_cores())
    share = max(1, cores // max(1, processes_here))
    busy = busy_cores() if busy is None else busy
    return max(1, min(share, cores - round(busy)))


def set_threads(setting: str | int, processes_here: int = 1, previous: int | None = None) -> int:
    """Apply ``run threads`` to torch (intra-op threads) and return the number used. ``auto`` on a resumed
    run keeps the ``previous`` run's count, so that the resumed steps compute exactly as the first ones."""
    if setting != "auto":
        n = int(setting)
    elif previous is not None:
        n = previous
    else:
        n = auto_threads(processes_here)
    torch.set_num_threads(n)
    return n
