"""Running a plan: the loop, checkpoints, resume, signals, DDP and faults (``loop.py`` reads top to bottom).

:func:`launch` is the command line's way in (a plan file and its settings); :func:`run_plan` takes a
compiled graph."""

from __future__ import annotations

from .folder import RunError
from .launch import launch
from .loop import RunResult, run_plan
from .signals import RunInterrupted

__all__ = ["RunError", "RunInterrupted", "RunResult", "launch", "run_plan"]
