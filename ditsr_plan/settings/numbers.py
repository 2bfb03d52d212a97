"""Numbers in plan files: step counts (``3k``, ``1.5k``, ``2M``) and weights (``0.35``, ``1e-4``)."""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation

SUFFIXES = {"k": 1_000, "M": 1_000_000}
MAX_STEPS = 10**12


class NumberError(ValueError):
    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


def parse_steps(text: str) -> int:
    """A step count: a whole, non-negative number of steps, with an optional k/M suffix."""
    text = text.strip()
    scale = 1
    if text and text[-1] in SUFFIXES:
        scale = SUFFIXES[text[-1]]
        body = text[:-1]
    else:
        body = text
    try:
        value = Decimal(body) * scale
    except InvalidOperation:
        raise NumberError(f"'{text}' is not a step count", "write a whole number such as 3000, 3k or 1.5k") from None
    if not value.is_finite():
        raise NumberError(f"'{text}' is not a step count", "write a whole number such as 3000, 3k or 1.5k")
    if value < 0:
        raise NumberError(f"step count '{text}' is negative", "step counts start at 0")
    if value != value.to_integral_value():
        raise NumberError(
            f"'{text}' is {value.normalize():f} steps: a step count must be a whole number",
            "round it to a whole number of steps",
        )
    if value > MAX_STEPS:
        raise NumberError(f"step count '{text}' is too large", f"at most {format_steps(MAX_STEPS)} steps")
    return int(value)


def parse_weight(text: str) -> float:
    """A weight: a finite, non-negative decimal number without a step suffix."""
    if text and text[-1] in SUFFIXES:
        raise NumberError(f"'{text}' is a step count, not a weight", "weights take no k/M suffix")
    try:
        value = float(text)
    except ValueError:
        raise NumberError(f"'{text}' is not a number") from None
    if not math.isfinite(value):
        raise NumberError(f"'{text}' is not a finite number")
    if value < 0:
        raise NumberError(f"weight {text} is negative", "weights are 0 or more; use 'off' for 0")
    return value


def format_steps(n: int) -> str:
    """A step count as people write it: 3000 -> 3k, 1500 -> 1.5k, 2000000 -> 2M, 1234 -> 1234."""
    for suffix, scale in (("M", 1_000_000), ("k", 1_000)):
        if n >= scale and n % (scale // 10) == 0:
            return f"{(Decimal(n) / scale).normalize():f}{suffix}"
    return str(n)


def format_value(x: float) -> str:
    """A weight as a short decimal: 0.35, 1, 1e-05."""
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.10g}"
