"""Comments in plan text: ``#`` to the end of the line, except inside double quotes."""

from __future__ import annotations


def split_comment(line: str) -> tuple[str, str | None]:
    """Code and comment of a physical line; a ``#`` inside double quotes is not a comment."""
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted:
            return line[:i], line[i:].rstrip()
    return line, None
