"""What the tool prints of names it did not choose: file names (and text from files) shown with control and
format characters escaped, so that a file named with an escape sequence, a newline or a bidirectional
override cannot rewrite the terminal or forge a line of output. Torch-free: every phase may use it."""

from __future__ import annotations

import os
import unicodedata


def shown(path: str | bytes | os.PathLike) -> str:
    """A file name as printed to a terminal or a log: control and format characters (escape sequences,
    newlines, bidirectional overrides) and undecodable bytes shown escaped (``\\x1b``), the rest as is."""
    text = os.fsdecode(path)
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's surrogate escape: a byte that is not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif unicodedata.category(ch)[0] == "C" or unicodedata.category(ch) in ("Zl", "Zp"):
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def same_width(line: str) -> str:
    """A line of a file quoted under a caret: each control or format character (an escape sequence's ESC, a
    bidirectional override) replaced by one U+FFFD, so that the caret below still points at its column."""
    return "".join("\ufffd" if unicodedata.category(ch)[0] == "C" else ch for ch in line)


def printable(text: str) -> str:
    """A message for the terminal that may quote names or file contents: lines kept, every other control or
    format character escaped as :func:`shown` does (the last line of defence; names are escaped where
    they are put into a message too)."""
    return "\n".join(shown(line).replace("\\x09", "\t") for line in text.split("\n"))
