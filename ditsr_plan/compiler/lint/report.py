"""Lint output formats (text, json, github, sarif) and the rule list (``ditsr-plan rules``)."""

from __future__ import annotations

import json
from typing import Any

from ditsr_plan import __version__
from ditsr_plan.diagnostics import Diagnostic, render
from ditsr_plan.terminal import shown

from . import LintResult
from .codes import RULE_NAMES


def _rule_name(code: str) -> str:
    return RULE_NAMES.get(code, "plan-error")


def _as_dict(f: Diagnostic) -> dict[str, Any]:
    return {
        "code": f.code,
        "name": _rule_name(f.code),
        "severity": f.severity,
        "message": f.message,
        "file": f.pos.file if f.pos else None,
        "line": f.pos.line if f.pos else None,
        "col": f.pos.col if f.pos else None,
        "hint": f.hint,
        "notes": [{"message": n.message, "at": str(n.pos) if n.pos else None} for n in f.notes],
    }


def _escape_github(text: str) -> str:
    return shown(text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A"))


def _sarif(result: LintResult) -> dict[str, Any]:
    from .rules import RULES

    rules = [
        {
            "id": r.code,
            "name": r.name,
            "shortDescription": {"text": r.summary()},
            "fullDescription": {"text": r.docs()},
            "help": {"text": r.docs()},
        }
        for r in RULES
    ]
    results = []
    for f in result.findings:
        entry: dict[str, Any] = {
            "ruleId": f.code,
            "level": "error" if f.severity == "error" else "warning",
            "message": {"text": f.message + (f" ({f.hint})" if f.hint else "")},
        }
        if f.pos:
            entry["locations"] = [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": f.pos.file},
                        "region": {
                            "startLine": f.pos.line,
                            "startColumn": f.pos.col,
                            "endColumn": f.pos.col + f.pos.length,
                        },
                    }
                }
            ]
        results.append(entry)
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": {"name": "ditsr-plan", "version": __version__, "rules": rules}},
                "results": results,
            }
        ],
    }


def report(result: LintResult, fmt: str, color: bool = False, summary: bool = True) -> str:
    """The findings in ``fmt``; text: rendered (ANSI colours when ``color``), then a summary line unless
    ``summary`` is off (``lint -q``)."""
    findings = result.findings
    if fmt == "json":
        return json.dumps([_as_dict(f) for f in findings], indent=2) + "\n"
    if fmt == "sarif":
        return json.dumps(_sarif(result), indent=2) + "\n"
    if fmt == "github":
        lines = []
        for f in findings:
            level = "error" if f.severity == "error" else "warning"
            where = f"file={f.pos.file},line={f.pos.line},col={f.pos.col}," if f.pos else ""
            lines.append(f"::{level} {where}title={f.code} {_rule_name(f.code)}::{_escape_github(f.message)}")
        return "".join(line + "\n" for line in lines)
    blocks = [render(f, result.sources, color) for f in findings]
    files = len(result.files)
    if not summary:
        return "".join(block + "\n\n" for block in blocks)
    if findings:
        blocks.append(f"{len(findings)} finding{'s' * (len(findings) != 1)} in {files} plan{'s' * (files != 1)}")
    else:
        blocks.append(f"{files} plan{'s' * (files != 1)} checked: no findings")
    return "\n\n".join(blocks) + "\n"


def rules_text(codes: list[str] | None = None) -> str:
    """Every rule (or those whose code starts with one of ``codes``): ``CODE name``, its documentation, and
    its parameters with their defaults."""
    from .rules import RULES

    out = []
    for rule in RULES:
        if codes and not any(rule.code.startswith(c.upper()) for c in codes):
            continue
        params = ", ".join(f"{k}={v:g}" for k, v in rule.params.items())
        block = [f"{rule.code} {rule.name}" + (f"  (parameters: {params})" if params else ""), ""]
        block += ["    " + line if line else "" for line in rule.docs().splitlines()]
        out.append("\n".join(block))
    return "\n\n".join(out) + "\n"


def rules_markdown() -> str:
    """``docs/rules.md``: generated from the rules' docstrings (``python -m ditsr_plan.compiler.lint.report``)."""
    from .rules import RULES

    out = [
        "# Lint rules",
        "",
        "Generated from the rules' docstrings by `python -m ditsr_plan.compiler.lint.report > docs/rules.md`;",
        "`ditsr-plan rules` prints the same. Suppress a finding on its line with `# noqa: CODE`; change a",
        "threshold with `--param CODE.NAME=VALUE`. Step thresholds scale with `--time-scale`.",
        "",
        "| code | name | catches |",
        "| --- | --- | --- |",
    ]
    out += [f"| [{r.code}](#{r.code.lower()}-{r.name}) | {r.name} | {r.summary()} |" for r in RULES]
    for rule in RULES:
        doc = rule.docs().splitlines()
        params = ", ".join(f"`{k}` = {v:g}" for k, v in rule.params.items())
        out += ["", f"## {rule.code} {rule.name}", "", doc[0]]
        body, in_example = [], False
        for line in doc[1:]:
            if line.startswith("Example:"):
                body += ["Example:", "", "```"]
                in_example = True
                continue
            if in_example and line and not line.startswith("    "):
                while body[-1] == "":
                    body.pop()
                body += ["```", ""]
                in_example = False
            body.append(line[4:] if in_example else line)
        out += body
        if params:
            out += ["", f"Parameters: {params}."]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(rules_markdown())
