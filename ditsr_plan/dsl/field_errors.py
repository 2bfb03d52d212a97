"""pydantic's validation errors said in the plan's own words.

A schema field knows what it accepts (its annotation, its bounds, its description, and for a few fields
a ``json_schema_extra`` with ``metavar`` -- the placeholder of a required value, ``root=PATH`` -- or
``allowed`` -- the readable form of a pattern, ``auto, cpu, cuda, cuda:N``). From that, every error of a
field becomes one message: ``lq_init must be in [0, 1]``, ``expected one of hinge, nonsat``,
``data folder needs root=PATH (a folder of HR images)``; never pydantic's wording.
"""

from __future__ import annotations

import types
import typing
from typing import Any, cast

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def _extra(info: FieldInfo, key: str) -> Any:
    extra = info.json_schema_extra
    return extra.get(key) if isinstance(extra, dict) else None


def _bounds(metadata: list[Any]) -> tuple[tuple[float, bool] | None, tuple[float, bool] | None]:
    """(lower, inclusive), (upper, inclusive) from annotated_types constraints (always numbers in our schemas:
    annotated_types types them as any comparable)."""
    low: tuple[float, bool] | None = None
    high: tuple[float, bool] | None = None
    for m in metadata:
        if isinstance(m, annotated_types.Ge):
            low = (cast(float, m.ge), True)
        elif isinstance(m, annotated_types.Gt):
            low = (cast(float, m.gt), False)
        elif isinstance(m, annotated_types.Le):
            high = (cast(float, m.le), True)
        elif isinstance(m, annotated_types.Lt):
            high = (cast(float, m.lt), False)
    return low, high


def _num(x: float) -> str:
    return f"{x:g}"


def interval(metadata: list[Any]) -> str | None:
    """``[0, 1]``, ``(0, 1)``, ``at least 1``, ``above 0``; None without bounds."""
    low, high = _bounds(metadata)
    if low and high:
        return f"{'[' if low[1] else '('}{_num(low[0])}, {_num(high[0])}{']' if high[1] else ')'}"
    if low:
        return f"at least {_num(low[0])}" if low[1] else f"above {_num(low[0])}"
    if high:
        return f"at most {_num(high[0])}" if high[1] else f"below {_num(high[0])}"
    return None


def _in_range(kind: str, metadata: list[Any]) -> str:
    span = interval(metadata)
    if span is None:
        return kind
    return f"{kind} in {span}" if span.startswith(("[", "(")) else f"{kind}, {span}"


def expected(annotation: Any, metadata: list[Any], info: FieldInfo | None = None) -> str:
    """What a field accepts, in words: ``one of hinge, nonsat``, ``a number in [0, 1]``, ``auto or a whole
    number in [1, 1024]``."""
    if info is not None and _extra(info, "allowed"):
        return "one of " + str(_extra(info, "allowed"))
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        inner, *more = typing.get_args(annotation)
        more = [m for m in more if not isinstance(m, FieldInfo)] + [
            c for m in more if isinstance(m, FieldInfo) for c in m.metadata
        ]
        return expected(inner, [*metadata, *more])
    if origin is typing.Literal:
        choices = [str(a) for a in typing.get_args(annotation)]
        return choices[0] if len(choices) == 1 else "one of " + ", ".join(choices)
    if origin in (typing.Union, types.UnionType):
        options = [expected(a, metadata if a is not type(None) else []) for a in typing.get_args(annotation)]
        return " or ".join(o for o in options if o)
    if annotation is type(None):
        return ""
    if annotation is bool:
        return "true or false (or on/off, yes/no)"
    if annotation is int:
        return _in_range("a whole number", metadata)
    if annotation is float:
        return _in_range("a number", metadata)
    if origin is tuple:
        return f"{len(typing.get_args(annotation))} numbers separated by a comma, e.g. 0.9,0.999"
    if annotation is str:
        return "text (quoted when it holds spaces)"
    return str(annotation)


def _suffix_hint(value: str) -> str | None:
    if value[-1:] in ("k", "M") and value[:-1].replace(".", "", 1).replace("e-", "", 1).isdigit():
        return f"the {value[-1]} suffix is only for step counts; write the number itself, e.g. '{value[:-1]}'"
    return None


def field_hint(info: FieldInfo) -> str | None:
    """The field's description and its default, for the hint under an error."""
    parts = [info.description] if info.description else []
    if not info.is_required() and info.default is not None:
        default = ",".join(map(str, info.default)) if isinstance(info.default, tuple) else info.default
        parts.append(f"default {default}")
    return "; ".join(parts) or None


def value_error(schema: type[BaseModel], key: str, value: str, error_type: str) -> tuple[str, str | None]:
    """(message, hint) for an invalid value of ``key``."""
    from ditsr_plan.diagnostics import did_you_mean

    info = schema.model_fields[key]
    metadata = list(info.metadata)
    span = interval(metadata)
    if error_type in RANGE_ERRORS and span:
        wording = f"must be in {span}" if span.startswith(("[", "(")) else f"must be {span}"
        return f"invalid value '{value}' for '{key}': {key} {wording}", field_hint(info)
    accepts = expected(info.annotation, metadata, info)
    hint = _suffix_hint(value) if error_type in ("float_parsing", "int_parsing") else None
    if accepts.startswith("one of "):
        choices = [c.strip() for c in accepts.removeprefix("one of ").split(",")]
        hint = did_you_mean(value, choices) or hint
    return f"invalid value '{value}' for '{key}': expected {accepts}", hint or field_hint(info)


def missing_key(schema: type[BaseModel], key: str, what: str) -> tuple[str, str]:
    """(message, hint) for a required key that is not given: ``data folder needs root=PATH (...)``."""
    info = schema.model_fields[key]
    metavar = _extra(info, "metavar") or key.upper()
    described = f" ({info.description})" if info.description else ""
    return f"{what} needs {key}={metavar}{described}", f"add {key}=... to the line"
