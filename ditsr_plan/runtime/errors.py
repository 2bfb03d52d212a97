"""The one base class of the runtime's errors: a run that cannot start or go on, for a reason the user can
fix (a missing folder, a model that does not load, a checkpoint that cannot be written...). The command
line catches this type alone and prints its message; anything else is a bug."""

from __future__ import annotations


class RunFailure(RuntimeError):
    """A run that cannot start or continue; the message says why and what to do."""
