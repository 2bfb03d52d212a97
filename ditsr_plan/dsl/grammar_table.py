"""The plan grammar's parser, its LALR tables built once and kept in the user's cache folder.

Building the parser from ``grammar.lark`` (reading the grammar, computing the LALR(1) tables, compiling the
lexer's patterns) takes about ten times as long as reading the tables back, on the path of every command
that parses a plan. The tables depend on nothing but the grammar's text and the versions of lark and
Python, all in the file's key: like Python's bytecode cache, the file is a faster form of this tool's own
source, never of a plan (``DITSR_PLAN_NO_CACHE`` turns off the compile cache of plans, not this).

The tables are lark's own serialisation (``Lark.save``), a pickle of plain data. Reading one is guarded
three ways: the file must be this user's and writable by nobody else (:func:`~ditsr_plan.user_cache.read_private`;
never a shared folder such as /tmp, where anyone may plant a file under a name that is easy to guess);
its first line must be this grammar's key; and it is unpickled with every class and function refused, so
that even a file that passed the first two checks cannot run code. A file that fails any check, or does
not load, is ignored and written again.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import sys
from functools import cache
from pathlib import Path
from typing import Any

from ditsr_plan.dsl.lark_import import LARK_VERSION, Lark
from ditsr_plan.user_cache import cache_dir, read_private, write_private

GRAMMAR = Path(__file__).with_name("grammar.lark")
OPTIONS: dict[str, Any] = {"parser": "lalr", "maybe_placeholders": True}
MAGIC = b"ditsr-plan grammar tables 1 "


class _PlainData(pickle.Unpickler):
    """Unpickles containers, numbers and strings only: any class or function a pickle names is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"grammar tables hold plain data only, not {module}.{name}")


def table_key(grammar: str) -> str:
    """What the tables depend on: the grammar, the options, and the versions of lark and Python."""
    what = [grammar, sorted(OPTIONS.items()), LARK_VERSION, sys.version_info[:2], pickle.HIGHEST_PROTOCOL]
    return hashlib.sha256(repr(what).encode()).hexdigest()


def table_path(key: str) -> Path:
    return cache_dir() / f"grammar-{key[:32]}.pickle"


@cache
def plan_parser() -> Lark:
    """The parser of one plan statement (``grammar.lark``), read from the cache folder or built (and kept)."""
    grammar = GRAMMAR.read_text()
    key = table_key(grammar)
    path = table_path(key)
    parser = _read(path, key)
    if parser is None:
        parser = Lark(grammar, **OPTIONS)
        out = io.BytesIO()
        out.write(MAGIC + key.encode() + b"\n")
        parser.save(out)
        write_private(path, out.getvalue())
    return parser


def _read(path: Path, key: str) -> Lark | None:
    data = read_private(path)
    if data is None:
        return None
    head, _, body = data.partition(b"\n")
    if head != MAGIC + key.encode():
        return None
    try:
        _PlainData(io.BytesIO(body)).load()  # refuses a pickle that names any class or function
        parser: Lark = Lark.load(io.BytesIO(body))  # so lark's own unpickling of it builds plain data only
    except Exception:  # tables of another shape, or cut short: build them again
        return None
    return parser
