"""``docs/settings.md``, generated from the schemas (their docstrings and ``Field`` descriptions), as
``docs/rules.md`` is from the lint rules: ``python -m ditsr_plan.dsl.settings_docs > docs/settings.md``.
A test keeps the file equal to what this prints."""

from __future__ import annotations

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ditsr_plan.dsl.field_errors import expected
from ditsr_plan.settings.schemas import BLOCKS, DEFAULT_BLOCKS, TERM_KINDS, step_fields


def _doc(schema: type[BaseModel]) -> str:
    return " ".join((schema.__doc__ or "").split())


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "**required**"
    value = info.default
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _table(schema: type[BaseModel]) -> list[str]:
    if not schema.model_fields:
        return ["No settings."]
    steps = set(step_fields(schema))
    rows = ["| key | default | accepts | what |", "| --- | --- | --- | --- |"]
    for key, info in schema.model_fields.items():
        accepts = expected(info.annotation, list(info.metadata), info)
        accepts += " (steps: scaled by --time-scale)" if key in steps else ""
        what = (info.description or "").replace("|", "\\|")
        rows.append(f"| `{key}` | {_default(info)} | {accepts.replace('|', '/')} | {what} |")
    return rows


def settings_markdown() -> str:
    out = [
        "# Settings: loss-term kinds and blocks",
        "",
        "Generated from the schemas in `ditsr_plan/settings/schemas.py` by",
        "`python -m ditsr_plan.dsl.settings_docs > docs/settings.md`; every key, its default, what it accepts and",
        "what it does. The plan language itself: [language.md](language.md).",
        "",
        "## Loss-term kinds",
        "",
        "`loss NAME KIND key=value...`. *pixel*: computed on the decoded pixel patch; *after-step*: trains",
        "modules of its own after the generator's step.",
    ]
    for kind, schema in TERM_KINDS.items():
        marks = [m for m, on in (("pixel", schema.pixel), ("after-step", schema.after_step)) if on]
        out += ["", f"### `{kind}`" + (f" ({', '.join(marks)})" if marks else ""), "", _doc(schema), ""]
        out += _table(schema)
    out += [
        "",
        "## Settings blocks",
        "",
        "`BLOCK [KIND] key=value...`. A block not written takes its default kind and values (when it has one);",
        "`ema` and `eval` are off unless written.",
    ]
    for block, kinds in BLOCKS.items():
        for block_kind, block_schema in kinds.items():
            title = f"`{block} {block_kind}`" if block_kind else f"`{block}`"
            default = (
                " (the default)"
                if block in DEFAULT_BLOCKS and DEFAULT_BLOCKS[block] == block_kind and block_kind
                else ""
            )
            out += ["", f"### {title}{default}", "", _doc(block_schema), ""]
            out += _table(block_schema)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(settings_markdown())
