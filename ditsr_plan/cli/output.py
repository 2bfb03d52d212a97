"""What the commands share about their output: verbosity (``-q``/``-v``), colour, standard input and output.

Colour: on when standard error is a terminal, unless ``NO_COLOR`` is set (any value, https://no-color.org);
``FORCE_COLOR`` turns it on anywhere. A plan named ``-`` is read from standard input (reported as
``<stdin>``).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

from ditsr_plan.terminal import printable

STDIN = "-"
STDIN_NAME = "<stdin>"


def use_color(stream=None) -> bool:
    stream = stream or sys.stderr
    if os.environ.get("NO_COLOR") is not None:
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return bool(getattr(stream, "isatty", lambda: False)())


@dataclass
class Output:
    quiet: bool = False
    verbose: bool = False

    def info(self, message: str) -> None:
        """A message about the work (``wrote x.png``); ``-q`` hides it."""
        if not self.quiet:
            print(printable(message), file=sys.stderr)

    def detail(self, message: str) -> None:
        """A message only ``-v`` shows."""
        if self.verbose:
            print(printable(message), file=sys.stderr)


def write_json(data: object, path: str | None = None) -> None:
    text = json.dumps(data, indent=2) + "\n"
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)


def plan_source(path: str) -> tuple[str, str | None]:
    """(the name to report, the text) of a plan argument: ``-`` reads standard input once."""
    if path == STDIN:
        return STDIN_NAME, sys.stdin.read()
    return path, None
