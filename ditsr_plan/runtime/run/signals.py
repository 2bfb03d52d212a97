"""SIGINT/SIGTERM during a run: finish the step, write a checkpoint, stop with 128 + the signal number.

A second signal stops at once, without a checkpoint (:class:`StoppedAtOnce`); the first one says so. A
signal while the run is being built or started (before the loop) stops at once too: nothing is trained
yet. Either way :func:`stopped_at_once` says what was done and what is left.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from .console import say

Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None  # what signal.signal returns


class RunInterrupted(RuntimeError):
    """SIGINT or SIGTERM: the run stopped (after a checkpoint, unless stopped at once); the message says
    what is left and how to go on."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class StoppedAtOnce(KeyboardInterrupt):
    """A second SIGINT/SIGTERM while the run was finishing its step: stop where it is, without a checkpoint."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class Signals:
    """SIGINT/SIGTERM set a flag; the loop checkpoints after the current step and stops. A second signal
    raises :class:`StoppedAtOnce` wherever the run is."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, Handler] = {}

    def __enter__(self) -> Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signum
        for sig in self.previous:
            signal.signal(sig, self._again)
        say(
            f"{signal_name(signum)} received: finishing this step, then writing a checkpoint "
            "(a second Ctrl-C stops at once, without a checkpoint)"
        )

    def _again(self, signum, frame) -> None:
        self._restore()
        raise StoppedAtOnce(signum)

    def _restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def __exit__(self, *exc) -> None:
        self._restore()


def _newest_checkpoint(run_dir: Path) -> str | None:
    steps = sorted(p.name for p in (run_dir / "checkpoints").glob("step-*") if (p / "manifest.json").is_file())
    return steps[-1] if steps else None


def stopped_at_once(exc: KeyboardInterrupt, run_dir: Path, folder, done: int | None, resume_command: str) -> str:
    """What a signal that stopped the run at once did: ``folder`` is the run folder's state (None when the
    run stopped before it was prepared), ``done`` the steps finished (None before the loop)."""
    name = signal_name(getattr(exc, "signum", signal.SIGINT))
    how = f"second {name}" if isinstance(exc, StoppedAtOnce) else name
    when = "while the run was starting" if done is None else f"after {done} steps"
    head = f"{how}: stopped at once {when}, without a checkpoint"
    if folder is None:
        return f"{head}; nothing was trained and {run_dir} was not touched"
    if folder.restored:
        return f"{head}; the new run had not finished its first step: the earlier run in {run_dir} is back as it was"
    if folder.removed:
        return f"{head}; the run had not finished its first step, so its folder {run_dir} was removed"
    newest = _newest_checkpoint(run_dir)
    kept = f"the newest checkpoint is {newest}" if newest else "it holds no checkpoint (a resume starts at step 0)"
    return f"{head}; {run_dir} is kept and {kept}; continue with: {resume_command}"
