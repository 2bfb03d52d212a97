"""SIGINT/SIGTERM during a run: finish the step, write a checkpoint, stop with 128 + the signal number."""

from __future__ import annotations

import signal
import threading

from .console import say


class RunInterrupted(RuntimeError):
    """SIGINT or SIGTERM: the run wrote a checkpoint and stopped; ``--resume`` continues it."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class Signals:
    """SIGINT/SIGTERM set a flag; the loop checkpoints after the current step and stops. A second signal
    stops at once (Python's default handling)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signum
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        say(f"{signal.Signals(signum).name} received: finishing this step, then writing a checkpoint")

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
