"""lark, imported without the ``regex`` package.

lark imports ``regex`` whenever it is installed (it is: ``transformers`` needs it), but uses it only for
``Lark(regex=True)``, which the plan grammar does not ask for; importing it is a fifth of lark's import
cost, on the path of every ``lint``/``compile``/``show`` that parses a plan. While lark is imported here,
``import regex`` fails (lark then keeps to ``re``, as it does where ``regex`` is not installed); afterwards
``regex`` imports as usual for whoever needs it. Nothing else happens in between (the CLI is one thread
then).
"""

from __future__ import annotations

import sys

_blocked = "regex" not in sys.modules
if _blocked:
    sys.modules["regex"] = None  # type: ignore[assignment]  # None in sys.modules: the import fails
try:
    from lark import Lark, Token, Tree
    from lark import __version__ as LARK_VERSION
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
finally:
    if _blocked:
        del sys.modules["regex"]

__all__ = [
    "LARK_VERSION",
    "Lark",
    "Token",
    "Tree",
    "UnexpectedCharacters",
    "UnexpectedEOF",
    "UnexpectedInput",
    "UnexpectedToken",
]
