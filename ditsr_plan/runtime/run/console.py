"""What a run prints: on standard error, by rank 0 only (under torchrun it speaks for the run)."""

from __future__ import annotations

import sys

from ...terminal import printable

_quiet = False


def say(message: str) -> None:
    if not _quiet:
        print(printable(message), file=sys.stderr, flush=True)


def silence(quiet: bool) -> None:
    """Ranks other than 0 say nothing."""
    global _quiet
    _quiet = quiet
